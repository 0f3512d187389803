"""Every kind of bad input a user can type, in one table: each must be rejected with one
clear line (`mnist-search: error: ...`, click's usage errors included) and exit 2 (usage) or
1 (runtime), without a traceback or a half-written result.

Run with -s to see the count.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from click.testing import CliRunner
from test_spec import BAD_SPECS, write

from mnist_search.cli import cli
from mnist_search.data import FILES


@dataclass
class Case:
    name: str
    setup: Callable[[Path], list[str]]  # builds what it needs under tmp, returns argv
    code: int
    fragment: str
    no_db: bool = False  # the storage must not have been created


def _spec_case(name: str, text: str, fragment: str) -> Case:
    return Case(f"study file: {name}", lambda tmp: ["run", str(write(tmp, text)), "--storage",
                                                    f"sqlite:///{tmp / 's.db'}"], 2, fragment,
                no_db=True)


def _file_case(name: str, make: Callable[[Path], None]) -> Case:
    def setup(tmp: Path) -> list[str]:
        path = tmp / "s.toml"
        make(path)
        return ["run", str(path), "--storage", f"sqlite:///{tmp / 's.db'}"]
    return Case(f"study file: {name}", setup, 2, "s.toml", no_db=True)


GOOD = 'description = "ok"\n[fixed]\nepochs = 1\n'


def _good(tmp: Path) -> Path:
    path = tmp / "good.toml"
    path.write_text(GOOD)
    return path


def _run_opts(*opts: str, fragment: str, code: int = 2) -> Case:
    return Case(f"run {' '.join(opts)}", lambda tmp: ["run", str(_good(tmp)), "--storage",
                                                      f"sqlite:///{tmp / 's.db'}", *opts],
                code, fragment, no_db=True)


def _existing(tmp: Path, direction: str = "maximize", attrs: dict | None = None) -> str:
    url = f"sqlite:///{tmp / 's.db'}"
    study = optuna.create_study(study_name="good", storage=url, direction=direction)
    for k, v in (attrs or {}).items():
        study.set_user_attr(k, v)
    return url


def _data_case(name: str, file: str, damage: Callable[[Path], None]) -> Case:
    def setup(tmp: Path) -> list[str]:
        raw = tmp / "root" / "TINY" / "raw"
        raw.mkdir(parents=True)
        for f in FILES:
            shutil.copy(SYNTH[0] / f, raw / f)
        damage(raw / file)
        return ["data", "verify", "--dataset", "tiny", "--root", str(tmp / "root")]
    return Case(f"data {file}: {name}", setup, 1, file)


def _set_count(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[4:8] = struct.pack(">I", struct.unpack(">I", b[4:8])[0] + 1)
    p.write_bytes(bytes(b))


def _swap(p: Path) -> None:
    other = p.with_name(p.name.replace("train", "t10k"))
    a, b = p.read_bytes(), other.read_bytes()
    p.write_bytes(b)
    other.write_bytes(a)


DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:-1]),
    "extended": lambda p: p.write_bytes(p.read_bytes() + b"\0"),
    "flipped byte": lambda p: p.write_bytes(p.read_bytes()[:-1] + bytes([p.read_bytes()[-1] ^ 1])),
    "wrong magic": lambda p: p.write_bytes(struct.pack(">I", 7) + p.read_bytes()[4:]),
    "wrong count": _set_count,
    "missing": lambda p: p.unlink(),
}
SYNTH: list[Path] = []


def _archive_case(tmp: Path) -> list[str]:
    bad = tmp / "bad.tgz"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + b"\0" * 64)
    return ["data", "fetch", "--dataset", "tiny", "--root", str(tmp / "r"), "--from", str(bad)]


def cases() -> list[Case]:
    out = [_spec_case(name, text, frag) for name, (text, frag) in BAD_SPECS.items()]
    out += [
        _file_case("malformed TOML", lambda p: p.write_text("[fixed\n")),
        _file_case("empty", lambda p: p.write_text("")),
        _file_case("directory", lambda p: p.mkdir()),
        _file_case("not UTF-8", lambda p: p.write_bytes(b'description = "caf\xe9"\n')),
        Case("study file: missing", lambda tmp: ["run", str(tmp / "nope.toml"), "--storage",
                                                 f"sqlite:///{tmp / 's.db'}"], 2, "nope.toml",
             no_db=True),
        _run_opts("--trials", "-1", fragment="--trials"),
        _run_opts("--trials", "0", fragment="--trials"),
        _run_opts("--workers", "0", fragment="--workers"),
        _run_opts("--workers", "-2", fragment="--workers"),
        _run_opts("--timeout", "-5", fragment="--timeout"),
        _run_opts("--device", "tpu", fragment="tpu"),
        _run_opts("--seed", "-1", fragment="--seed"),
        _run_opts("--heartbeat", "-1", fragment="--heartbeat"),
        Case("run --storage not-a-url", lambda tmp: ["run", str(_good(tmp)), "--storage",
                                                     "mnist.db"], 2, "not a URL"),
        Case("run --storage unknown scheme", lambda tmp: ["run", str(_good(tmp)), "--storage",
                                                          "redis://x"], 2, "redis"),
        Case("run --storage missing directory", lambda tmp: [
            "run", str(_good(tmp)), "--storage", f"sqlite:///{tmp / 'no' / 's.db'}"], 2,
            "does not exist"),
        Case("run: direction conflicts with the stored study", lambda tmp: [
            "run", str(_good(tmp)), "--storage", _existing(tmp, "minimize")], 2, "direction"),
        Case("run: study file changed since creation", lambda tmp: [
            "run", str(_good(tmp)), "--storage",
            _existing(tmp, attrs={"spec_hash": "0" * 16, "seed": 0})], 2, "--force"),
        Case("run: --seed differs from the stored study", lambda tmp: [
            "run", str(_good(tmp)), "--storage", _existing(tmp, attrs={"seed": 4}), "--seed",
            "9", "--force"], 2, "seed"),
        Case("show: unknown study", lambda tmp: ["show", "nope", "--storage",
                                                 _existing(tmp)], 2, "no study named"),
        Case("export: unknown study", lambda tmp: ["export", "nope", "-o", str(tmp / "x.csv"),
                                                   "--storage", _existing(tmp)], 2,
             "no study named"),
        Case("best: unknown study", lambda tmp: ["best", "nope", "--storage", _existing(tmp)],
             2, "no study named"),
        Case("best: no finished trial", lambda tmp: ["best", "good", "--storage",
                                                     _existing(tmp)], 2, "no finished"),
        Case("export -o into a missing directory", lambda tmp: [
            "export", "good", "-o", str(tmp / "no" / "x.csv"), "--storage", _existing(tmp)], 2,
            "does not exist"),
        Case("export --format xml", lambda tmp: ["export", "good", "--format", "xml", "-o", "x"],
             2, "xml"),
        Case("show --top 0", lambda tmp: ["show", "good", "--top", "0"], 2, "--top"),
        Case("show on a storage file that does not exist", lambda tmp: [
            "show", "x", "--storage", f"sqlite:///{tmp / 'none.db'}"], 1, "no such database"),
        Case("train --hidden 128,x", lambda tmp: ["train", "--hidden", "128,x"], 2, "128,x"),
        Case("train --epochs 0", lambda tmp: ["train", "--epochs", "0"], 2, "epochs"),
        Case("train --dropout 1.5", lambda tmp: ["train", "--dropout", "1.5"], 2, "dropout"),
        Case("train --lr -1", lambda tmp: ["train", "--lr", "-1"], 2, "lr"),
        Case("train --device tpu", lambda tmp: ["train", "--device", "tpu"], 2, "device"),
        Case("data --dataset cifar", lambda tmp: ["data", "verify", "--dataset", "cifar"], 2,
             "cifar"),
        Case("data fetch --source ftp", lambda tmp: ["data", "fetch", "--source", "ftp"], 2,
             "ftp"),
        Case("data fetch --from a corrupt archive", _archive_case, 1, "corrupt"),
    ]
    import torch

    if not torch.cuda.is_available():
        out.append(_run_opts("--device", "cuda", fragment="CUDA is not available"))
    for file in FILES:
        out += [_data_case(kind, file, fn) for kind, fn in DAMAGE.items()]
    out += [_data_case("swapped train/test", f, _swap) for f in FILES if f.startswith("train")]
    return out


def test_every_bad_input_is_rejected_cleanly(tmp_path, tiny_pinned, synthetic_dir):
    SYNTH[:] = [synthetic_dir]
    runner = CliRunner()
    crashed: list[str] = []
    table = cases()
    for i, case in enumerate(table):
        tmp = tmp_path / f"case{i}"
        tmp.mkdir()
        argv = case.setup(tmp)
        res = runner.invoke(cli, argv, obj={})
        err_lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        problems = []
        if res.exit_code != case.code:
            problems.append(f"exit {res.exit_code}, expected {case.code}")
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            problems.append(f"raised {type(res.exception).__name__}: {res.exception}")
        if "Traceback" in res.output:
            problems.append("traceback printed")
        # one line, whoever found the problem: the package or click's option parsing
        if len(err_lines) != 1 or not err_lines[0].startswith("mnist-search: error: "):
            problems.append(f"not one 'mnist-search: error:' line: {err_lines}")
        if case.fragment not in res.stderr:
            problems.append(f"{case.fragment!r} not in {res.stderr!r}")
        if case.no_db and (tmp / "s.db").exists():
            problems.append("a storage file was created")
        if problems:
            crashed.append(f"{case.name}: {'; '.join(problems)}")
    print(f"\n{len(table) - len(crashed)} bad inputs rejected, {len(crashed)} crashed")
    assert not crashed, "\n".join(crashed)
