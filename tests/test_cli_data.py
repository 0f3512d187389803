from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mnist_search.cli import cli
from mnist_search.data import FILES


def run(*args):
    return CliRunner().invoke(cli, list(args), obj={})


def one_error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mnist-search: error: ")
    assert "Traceback" not in result.output
    return lines[0]


def test_verify_and_info_on_a_good_copy(tiny_pinned):
    dataset, root = tiny_pinned
    res = run("data", "verify", "--dataset", dataset, "--root", str(root))
    assert res.exit_code == 0, res.output
    assert res.stdout.count("ok  ") == 4
    res = run("data", "info", "--dataset", dataset, "--root", str(root), "--json")
    info = json.loads(res.stdout)
    assert info["train"] == 512 and info["test"] == 128 and sum(info["train_class_counts"]) == 512


def test_verify_names_the_damaged_file_and_exits_1(tiny_pinned):
    dataset, root = tiny_pinned
    path = root / "TINY" / "raw" / FILES[1]
    path.write_bytes(path.read_bytes()[:-3])
    res = run("data", "verify", "--dataset", dataset, "--root", str(root))
    assert res.exit_code == 1
    assert FILES[1] in one_error_line(res)


def test_unknown_dataset_is_a_usage_error(tmp_path):
    res = run("data", "verify", "--dataset", "cifar", "--root", str(tmp_path))
    assert res.exit_code == 2
    assert "cifar" in one_error_line(res)


def test_bad_source_choice_exits_2():
    res = run("data", "fetch", "--source", "ftp")
    assert res.exit_code == 2


def test_fetch_from_corrupt_archive_exits_1_and_leaves_nothing(tiny_pinned, tmp_path):
    dataset, _ = tiny_pinned
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(b"\x1f\x8b\x08\x00 definitely not a tarball")
    root = tmp_path / "r"
    res = run("data", "fetch", "--dataset", dataset, "--root", str(root), "--from", str(bad))
    assert res.exit_code == 1
    assert "corrupt archive" in one_error_line(res)
    assert not any((root / "TINY" / "raw" / f).exists() for f in FILES)


def test_fetch_from_directory_of_files(tiny_pinned, synthetic_dir, tmp_path):
    dataset, _ = tiny_pinned
    root = tmp_path / "r"
    res = run("data", "fetch", "--dataset", dataset, "--root", str(root),
              "--from", str(synthetic_dir))
    assert res.exit_code == 0, res.output
    assert "verified" in res.stdout


def test_missing_data_is_one_line_with_the_fix(tmp_path):
    res = run("data", "verify", "--dataset", "mnist", "--root", str(tmp_path))
    assert res.exit_code == 1
    assert "mnist-search data fetch --dataset mnist" in one_error_line(res)


@pytest.mark.parametrize("args", [
    ["train", "--hidden", "128,x"], ["train", "--epochs", "0"], ["train", "--dropout", "1.5"],
    ["train", "--momentum", "-0.1"], ["train", "--device", "tpu"],
])
def test_train_rejects_bad_options_with_exit_2(args, synthetic_dir):
    res = run(*args, "--dataset", str(synthetic_dir))
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output


def test_train_runs_on_a_directory_dataset(synthetic_dir):
    res = run("train", "--dataset", str(synthetic_dir), "--epochs", "2", "--device", "cpu",
              "--momentum", "0.9", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["architecture"] == "784-128-64-10" and len(out["train_loss"]) == 2


def test_help_never_imports_torch_or_optuna():
    import subprocess
    import sys

    code = ("import sys; from click.testing import CliRunner; from mnist_search.cli import cli; "
            "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0; "
            "print(sorted(m for m in ('torch', 'optuna', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("command", ["data", "train", "run", "studies", "show", "best",
                                     "export", "report", "reap", "dashboard"])
def test_every_command_has_help(command):
    res = run(command, "--help")
    assert res.exit_code == 0 and "Usage:" in res.stdout and len(res.stdout) > 100


def test_train_has_an_option_for_every_config_field(synthetic_dir):
    """The options are made from TrainConfig: a field added there is an option here, and the
    best-mlp reference's regularizers can be given."""
    import dataclasses

    from mnist_search.cli.train import train_cmd
    from mnist_search.config import TrainConfig

    options = {p.name for p in train_cmd.params}
    internal = {"order_seed", "order_skip", "pad_hidden", "matmul_precision"}  # --tf32 sets it
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - internal
    assert fields <= options, fields - options
    res = CliRunner().invoke(cli, ["train", "--dataset", str(synthetic_dir), "--epochs", "1",
                                   "--device", "cpu", "--input-dropout", "0.2", "--max-norm",
                                   "3.5", "--optimizer", "nadam", "--json"], obj={})
    assert res.exit_code == 0, res.output
    config = json.loads(res.stdout)["config"]
    assert config["input_dropout"] == 0.2 and config["max_norm"] == 3.5
    assert config["optimizer"] == "nadam"


def test_a_gzip_bomb_is_refused_at_the_files_size_not_expanded(tiny_pinned, synthetic_dir,
                                                                 tmp_path):
    """A 50 MB expansion from a ~50 kB member: stopped once past the 401,424 bytes the
    train images of a 512-image dataset have, never whole in memory."""
    import gzip
    import resource
    import shutil

    dataset, _ = tiny_pinned
    src = tmp_path / "src"
    src.mkdir()
    for f in FILES:
        shutil.copy(synthetic_dir / f, src / f)
    (src / FILES[0]).unlink()
    with gzip.open(src / f"{FILES[0]}.gz", "wb") as fh:
        for _ in range(50):
            fh.write(bytes(1 << 20))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    root = tmp_path / "r"
    res = run("data", "fetch", "--dataset", dataset, "--root", str(root), "--from", str(src))
    assert res.exit_code == 1
    assert "holds more than the 401,424 bytes" in one_error_line(res)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 40, grown_mb  # the expansion was never held whole
    assert not any((root / "TINY" / "raw" / f).exists() for f in FILES)


def test_a_folder_that_loops_or_claims_billions_of_images_is_one_line(synthetic_dir, tmp_path):
    import shutil
    import struct

    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    res = run("train", "--dataset", str(loop), "--epochs", "1")
    assert res.exit_code == 2 and "internal error" not in res.stderr
    assert "loop" in one_error_line(res)
    huge = tmp_path / "huge"
    shutil.copytree(synthetic_dir, huge)
    path = huge / FILES[0]
    with path.open("wb") as fh:  # a header of 2^32-1 images over a sparse 3.3 TB
        fh.write(struct.pack(">IIII", 2051, 2**32 - 1, 28, 28))
        fh.truncate(16 + (2**32 - 1) * 784)
    res = run("data", "verify", "--dataset", str(huge))
    assert res.exit_code == 2
    assert "4,294,967,295 items; at most 10,000,000" in one_error_line(res)
