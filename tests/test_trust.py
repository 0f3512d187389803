"""What users trust the toolkit with: no command deletes or replaces a file it did not
write, no password reaches a screen, a log or a command line, and readers leave a storage as
they found it."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from test_concurrency import free_port

from mnist_search.cli import cli
from mnist_search.errors import redact

from helpers import exe, integrity, wait_for, write_study

STUDY = """
trials = 4
[sampler]
kind = "random"
[fixed]
dataset = DATA
epochs = 1
hidden = [16]
[search]
lr = { low = 0.01, high = 0.1, log = true }
[[reference]]
label = "base"
lr = 0.05
"""

SECRET = "Sup3rSecretPw"


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner(env=env).invoke(cli, list(args), obj={})


@pytest.fixture(scope="module")
def small_db(tmp_path_factory, synthetic_dir):
    tmp = tmp_path_factory.mktemp("trust")
    spec = write_study(tmp / "t.toml", synthetic_dir, STUDY)
    url = f"sqlite:///{tmp / 't.db'}"
    res = run("-q", "run", str(spec), "--storage", url, "--workers", "1")
    assert res.exit_code == 0, res.output
    return url


# --- output folders: write into them, never remove what is not a report's ------------------

def test_report_into_a_folder_keeps_every_other_file(small_db, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "sub").mkdir()
    (out / "sub" / "keep.csv").write_text("1,2")
    res = run("report", "t", "--storage", small_db, "-o", str(out))
    assert res.exit_code == 0, res.output
    assert (out / "notes.txt").read_text() == "my notes"
    assert (out / "sub" / "keep.csv").read_text() == "1,2"
    assert (out / "report.html").is_file() and list(out.glob("*.png"))
    again = run("report", "t", "--storage", small_db, "-o", str(out))  # its own files: fine
    assert again.exit_code == 0, again.output
    assert (out / "notes.txt").read_text() == "my notes"
    assert not [p for p in out.iterdir() if p.name.startswith(".mine.")]  # no staging left


def test_report_into_the_current_folder_keeps_the_database(small_db, tmp_path, monkeypatch):
    db = Path(small_db[len("sqlite:///"):])
    size = db.stat().st_size
    monkeypatch.chdir(db.parent)
    before = {p.name for p in db.parent.iterdir()}
    res = run("report", "t", "--storage", small_db, "-o", ".")
    assert res.exit_code == 0, res.output
    assert before <= {p.name for p in db.parent.iterdir()}
    assert db.stat().st_size >= size and (db.parent / "t.toml").is_file()
    assert (db.parent / "report.html").is_file()


def test_report_refuses_to_replace_a_file_no_report_wrote(small_db, tmp_path):
    out = tmp_path / "site"
    out.mkdir()
    (out / "report.html").write_text("<p>my own page</p>")
    res = run("report", "t", "--storage", small_db, "-o", str(out))
    assert res.exit_code == 2, res.output
    assert "no report wrote" in res.stderr and len(res.stderr.splitlines()) == 1
    assert (out / "report.html").read_text() == "<p>my own page</p>"
    assert [p.name for p in out.iterdir()] == ["report.html"]
    (tmp_path / "file").write_text("x")
    res = run("report", "t", "--storage", small_db, "-o", str(tmp_path / "file"))
    assert res.exit_code == 2 and (tmp_path / "file").read_text() == "x"


def test_rerun_checks_its_output_before_training(small_db, tmp_path):
    res = run("rerun", "t", "0", "--storage", small_db, "-o", str(tmp_path / "no" / "x.st"))
    assert res.exit_code == 2, res.output
    assert "does not exist" in res.stderr
    assert "test accuracy" not in res.stdout  # it stopped before training anything


def test_model_output_never_follows_a_planted_link(small_db, tmp_path, monkeypatch):
    """The old staging name was `.NAME.PID.tmp`, opened with open(): a link planted there
    made the download overwrite whatever it pointed to."""
    monkeypatch.chdir(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    os.symlink(victim, tmp_path / f".best.safetensors.{os.getpid()}.tmp")
    res = run("model", "t", "--storage", small_db, "-o", "best.safetensors")
    assert res.exit_code == 0, res.output
    assert victim.read_text() == "precious"
    assert (tmp_path / "best.safetensors").read_bytes()[:8] != b"precious"


# --- output files: never the study's storage, a study file or a device --------------------

def _db_of(url: str) -> Path:
    return Path(url[len("sqlite:///"):])


def _copy_db(source: Path, target: Path) -> None:
    """A whole copy of a WAL database (its -wal file may hold what the main file does not)."""
    import sqlite3

    with sqlite3.connect(str(source)) as src, sqlite3.connect(str(target)) as dst:
        src.backup(dst)
    dst.close()
    src.close()


def _output_commands(url: str, out: Path, *extra: str) -> list[list[str]]:
    return [["model", "t", "--storage", url, "-o", str(out), *extra],
            ["export", "t", "--storage", url, "-o", str(out), *extra],
            ["rerun", "t", "0", "--storage", url, "-o", str(out), *extra]]


def test_no_output_path_replaces_the_storage_or_a_study_file(small_db):
    db = _db_of(small_db)
    models = db.with_name(db.name + ".artifacts")
    stored = sorted(p for p in models.iterdir() if p.is_file())
    assert stored, "the study keeps its models"
    before = {p: p.read_bytes() for p in [db, db.with_name("t.toml"), *stored]}
    targets = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"),
               stored[0], models / "new.safetensors", db.with_name("t.toml")]
    for target in targets:
        for argv in _output_commands(small_db, target, "--force"):
            res = run(*argv)
            assert res.exit_code == 2, (argv, res.output)
            assert "never replaced" in res.stderr and len(res.stderr.splitlines()) == 1
            assert "test accuracy" not in res.stdout  # rerun refused before training
    assert {p: p.read_bytes() for p in before} == before
    assert not (models / "new.safetensors").exists()
    assert integrity(db) == "ok"


def test_a_copy_of_a_database_is_never_replaced_either(small_db, tmp_path):
    copy = tmp_path / "backup.sqlite"
    _copy_db(_db_of(small_db), copy)
    res = run("export", "t", "--storage", small_db, "-o", str(copy), "--force")
    assert res.exit_code == 2 and "SQLite database" in res.stderr
    assert integrity(copy) == "ok" and copy.read_bytes()[:15] == b"SQLite format 3"


def test_an_existing_file_is_replaced_only_with_force(small_db, tmp_path):
    mine = tmp_path / "mine.csv"
    mine.write_text("my data")
    for argv in _output_commands(small_db, mine):
        res = run(*argv)
        assert res.exit_code == 2 and "--force" in res.stderr, res.output
        assert mine.read_text() == "my data"
    res = run("export", "t", "--storage", small_db, "-o", str(mine), "--force")
    assert res.exit_code == 0, res.output
    assert mine.read_text().startswith("number,")
    res = run("model", "t", "--storage", small_db, "-o", str(tmp_path / "m.st"))
    assert res.exit_code == 0, res.output  # a new name needs nothing


def test_devices_and_pipes_are_never_replaced(small_db, tmp_path):
    """As root (Docker, Colab) a rename onto /dev/null used to turn it into a file. The
    nodes are made in the test's own folder, so a regression replaces nothing shared."""
    import stat

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    nodes = [fifo]
    if os.geteuid() == 0:
        null = tmp_path / "null"
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        nodes.append(null)
    link = tmp_path / "stdout"
    link.symlink_to(fifo)  # as /dev/stdout is a link to what fd 1 is
    for node in [*nodes, link]:
        kind = stat.S_IFMT(os.stat(node).st_mode)
        for argv in _output_commands(small_db, node, "--force"):
            res = run(*argv)
            assert res.exit_code == 2 and "not a regular file" in res.stderr, res.output
        assert stat.S_IFMT(os.stat(node).st_mode) == kind
    assert link.is_symlink()


def test_a_planted_report_manifest_deletes_nothing(small_db, tmp_path, monkeypatch):
    """A manifest that came with a clone lists the database, the study file and a page,
    by name (the old format) and with their true digests: report -o . keeps them all."""
    import hashlib

    for i, digests in enumerate([False, True]):
        folder = tmp_path / f"clone{i}"
        folder.mkdir()
        db = folder / "t.db"
        _copy_db(_db_of(small_db), db)
        (folder / "t.toml").write_text("trials = 1")
        (folder / "report.html").write_text("<p>mine</p>")
        (folder / "old.png").write_bytes(b"my picture")
        # a figure outside the folder, listed through ../ with its true digest: a report
        # writes figures only into its own folder, so it removes none through a /
        (folder / "sub").mkdir()
        names = ["t.db", "t.toml", "report.html", "old.png", "../outside.png",
                 "sub/../../outside.png", "../outside.txt"]
        (tmp_path / "outside.txt").write_text("outside")
        (tmp_path / "outside.png").write_bytes(b"a picture outside")
        lines = [f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}"
                 if digests else n for n in names[:-1]] + [names[-1]]
        (folder / ".mnist-search-report").write_text("\n".join(lines) + "\n")
        before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
        monkeypatch.chdir(folder)
        res = run("report", "t", "--storage", "sqlite:///t.db", "-o", ".", "--format", "md")
        assert res.exit_code == 0, res.output
        for name, data in before.items():
            if name not in (".mnist-search-report",) and not (digests and name == "old.png"):
                assert (folder / name).read_bytes() == data, name
        assert (tmp_path / "outside.txt").read_text() == "outside"
        assert (tmp_path / "outside.png").read_bytes() == b"a picture outside"
        assert integrity(db) == "ok"


def test_an_md_report_beside_an_html_one_keeps_it(small_db, tmp_path):
    out = tmp_path / "rep"
    assert run("report", "t", "--storage", small_db, "-o", str(out)).exit_code == 0
    page = (out / "report.html").read_bytes()
    res = run("report", "t", "--storage", small_db, "-o", str(out), "--format", "md")
    assert res.exit_code == 0, res.output
    assert (out / "report.html").read_bytes() == page and (out / "report.md").is_file()
    res = run("report", "t", "--storage", small_db, "-o", str(out))  # html again: ours
    assert res.exit_code == 0, res.output
    (out / "report.html").write_text("edited by hand")  # no longer what a report wrote
    res = run("report", "t", "--storage", small_db, "-o", str(out))
    assert res.exit_code == 2 and (out / "report.html").read_text() == "edited by hand"


def test_report_never_follows_a_dangling_link(small_db, tmp_path):
    link = tmp_path / "dang"
    link.symlink_to(tmp_path / "elsewhere" / "deep" / "new")
    res = run("report", "t", "--storage", small_db, "-o", str(link))
    assert res.exit_code == 2 and "link to nothing" in res.stderr, res.output
    assert not (tmp_path / "elsewhere").exists()


# --- passwords -----------------------------------------------------------------------------

@pytest.mark.parametrize("url, hidden", [
    ("postgresql+psycopg://ms:PW@db.example/x", "postgresql+psycopg://ms:***@db.example/x"),
    ("postgresql://ms:p%40ss:w@h:5432/x?sslmode=require", "postgresql://ms:***@h:5432/x"
     "?sslmode=require"),
    ("postgresql://ms:a/b@h/x", "postgresql://ms:***@h/x"),
    ("postgresql://ms@h/x?password=PW&sslmode=require", "postgresql://ms@h/x?password=***"
     "&sslmode=require"),
    ("postgresql://h/x?sslmode=require&PassWord=PW", "postgresql://h/x?sslmode=require"
     "&PassWord=***"),
    ("ms:PW@h/x", "ms:***@h/x"),
    ("sqlite:///a/b.db", "sqlite:///a/b.db"),
    ("http://127.0.0.1:8080/dashboard", "http://127.0.0.1:8080/dashboard"),
    ("no study named 'x' in postgresql://u:PW@h/d; it has: a", "no study named 'x' in "
     "postgresql://u:***@h/d; it has: a"),
])
def test_redact_hides_every_password(url, hidden):
    assert redact(url) == hidden


ODD_PASSWORDS = ["it'sS3cret", 'quo"teS3cret', "sp ace S3cret", "tab\tS3cret",
                 "new\nline S3cret", "p%40ss/S3cret"]


@pytest.mark.parametrize("password", ODD_PASSWORDS)
def test_a_password_of_any_characters_is_hidden_once_the_url_is_given(password):
    from mnist_search.errors import redact_url, remember_secrets

    url = f"postgresql+psycopg://ms2:{password}@127.0.0.1:1/msdb"
    assert password not in redact_url(url) and "ms2:***@127.0.0.1" in redact_url(url)
    remember_secrets(url)
    message = f"no study named 'x' in {url}; it has: s"
    assert password not in redact(message) and "S3cret" not in redact(message)
    assert redact(message).endswith("it has: s")


def test_objects_the_api_returns_keep_the_password_out_of_notebooks():
    """Jupyter saves text/plain beside text/html: repr, str and HTML must all be clean."""
    from mnist_search.workers.pool import RunSummary

    url = "postgresql+psycopg://ms2:it'sS3cret@127.0.0.1:5432/msdb"
    summary = RunSummary("s", url, 2, {"done": 2, "complete": 2, "failed": 0, "running": 0},
                         0.9, 1.0)
    for shown in (repr(summary), str(summary), summary._repr_html_(), f"{summary}"):
        assert "S3cret" not in shown and "it'" not in shown
    assert "ms2:***@127.0.0.1" in repr(summary)
    assert summary.storage == url  # the field itself still opens the storage


@pytest.mark.parametrize("password", ["it'sS3cret", "a b\nS3cret"])
def test_no_message_prints_a_password_with_odd_characters(password):
    url = f"postgresql+psycopg://ms2:{password}@127.0.0.1:{free_port()}/msdb"
    for env in ({}, {"MNIST_SEARCH_STORAGE": url}):
        args = ["best", "x"] if env else ["show", "x", "--storage", url]
        proc = subprocess.run([exe("mnist-search"), *args], capture_output=True, text=True,
                              timeout=120, env={**os.environ, **env,
                                                "MNIST_SEARCH_STORAGE_RETRY": "0"})
        assert proc.returncode == 1, proc.stderr
        assert "S3cret" not in proc.stdout + proc.stderr, proc.stderr
        assert len(proc.stderr.splitlines()) == 1


UNREACHABLE = [f"postgresql+psycopg://ms:{SECRET}@127.0.0.1:{{port}}/db",
               f"postgresql+psycopg://ms@127.0.0.1:{{port}}/db?password={SECRET}"]


@pytest.mark.parametrize("template", UNREACHABLE)
@pytest.mark.parametrize("argv", [["-v", "show", "x"], ["-v", "studies"], ["-v", "dashboard"],
                                  ["-v", "best", "x"]])
def test_no_command_prints_a_password(template, argv):
    url = template.format(port=free_port())  # nothing listens there: connection refused
    for env in ({}, {"MNIST_SEARCH_STORAGE": url}):
        args = argv if env else [*argv, "--storage", url]
        proc = subprocess.run([exe("mnist-search"), *args], capture_output=True, text=True,
                              timeout=120, env={**os.environ, **env,
                                                "MNIST_SEARCH_STORAGE_RETRY": "0"})
        assert proc.returncode != 0
        assert SECRET not in proc.stdout + proc.stderr, proc.stderr
        assert "mnist-search: error: " in proc.stderr and "Traceback" not in proc.stderr


def _command_lines() -> list[bytes]:
    lines = []
    for proc in Path("/proc").iterdir():
        try:
            lines.append((proc / "cmdline").read_bytes())
        except OSError:
            continue
    return lines


def test_dashboard_keeps_the_storage_url_off_every_command_line(small_db):
    port = free_port()
    proc = subprocess.Popen([exe("mnist-search"), "dashboard", "--port", str(port)],
                            env={**os.environ, "MNIST_SEARCH_STORAGE": small_db},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def up() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies",
                                            timeout=5) as r:
                    return b'"t"' in r.read()
            except OSError:
                return False

        wait_for(up, 60, "the dashboard's API")
        db = small_db[len("sqlite:///"):].encode()
        assert not [c for c in _command_lines() if db in c]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def test_names_and_labels_from_a_storage_cannot_drive_the_terminal(small_db, tmp_path):
    """Anyone who can write to a shared storage names studies and labels: ESC, CR and a
    newline are shown as escapes, never sent to the terminal."""
    url = f"sqlite:///{tmp_path / 'evil.db'}"
    evil = "evil\x1b[2J\x1b]0;pwned\x07\rmnist-search: error: fake"
    study = optuna.create_study(study_name=evil, storage=url, direction="maximize")
    trial = study.ask()
    trial.set_user_attr("label", "row\nINJECTED-ROW")
    study.tell(trial, 1.0)
    for argv in (["studies"], ["show", evil], ["show", "nosuch"]):
        res = run(*argv, "--storage", url)
        out = res.stdout + res.stderr
        assert "\x1b" not in out and "\r" not in out and "\x07" not in out, argv
        assert not any(line.startswith("INJECTED-ROW") for line in out.splitlines())
    assert "evil\\x1b[2J" in run("studies", "--storage", url).stdout


# --- readers leave a storage as they found it ----------------------------------------------

@pytest.mark.parametrize("argv", [["studies"], ["show", "x"], ["dashboard", "--port", "0"]])
def test_readers_never_create_a_schema_or_a_file(tmp_path, argv):
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    res = run(*argv, "--storage", f"sqlite:///{empty}")
    assert res.exit_code == 1, res.output
    assert "no studies table" in res.stderr and len(res.stderr.splitlines()) == 1
    assert empty.read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]
    typo = tmp_path / "tpyo.db"
    res = run(*argv, "--storage", f"sqlite:///{typo}")
    assert res.exit_code == 1 and "no such database file" in res.stderr
    assert not typo.exists()


def _open_new(url: str, barrier) -> str:
    from mnist_search.storage.connect import make_storage

    barrier.wait()
    try:
        make_storage(url)
    except Exception as exc:  # noqa: BLE001 - the test reports it
        return f"{type(exc).__name__}: {exc}"
    return ""


def test_first_runs_on_a_new_sqlite_file_do_not_race(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    errors = []
    for attempt in range(4):
        url = f"sqlite:///{tmp_path / f'new{attempt}.db'}"
        with ctx.Manager() as manager:
            barrier = manager.Barrier(4)
            with ctx.Pool(4) as pool:
                errors += [e for e in pool.starmap(_open_new, [(url, barrier)] * 4) if e]
        assert optuna.get_all_study_names(storage=url) == []
    assert not errors, errors


def _open_as(url: str, barrier, create: bool) -> str:
    from mnist_search.storage.connect import make_storage

    barrier.wait()
    try:
        make_storage(url, create=create)
    except Exception as exc:  # noqa: BLE001 - the test reports it
        return f"{type(exc).__name__}: {exc}"
    return ""


def test_readers_never_fail_a_first_run_on_a_new_sqlite_file(tmp_path):
    """A reader (show, studies, the dashboard) opening the file a first run is creating:
    the creator never fails, and a reader fails only as for a file with no storage yet."""
    ctx = multiprocessing.get_context("spawn")
    creators, readers = [], []
    for attempt in range(4):
        url = f"sqlite:///{tmp_path / f'new{attempt}.db'}"
        with ctx.Manager() as manager:
            barrier = manager.Barrier(3)
            with ctx.Pool(3) as pool:
                out = pool.starmap(_open_as, [(url, barrier, True), (url, barrier, False),
                                              (url, barrier, False)])
        creators.append(out[0])
        readers += [e for e in out[1:] if e]
    assert creators == [""] * 4
    clean = ("no such database file", "holds no Optuna storage")
    assert all(any(c in e for c in clean) for e in readers), readers


def test_a_reading_command_leaves_a_delete_journal_database_as_it_was(tmp_path):
    import hashlib
    import sqlite3

    db = tmp_path / "plain.db"
    study = optuna.create_study(study_name="p", storage=f"sqlite:///{db}")
    study.tell(study.ask(), 1.0)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    for argv in (["show", "p"], ["studies"], ["best", "p"]):
        res = run(*argv, "--storage", f"sqlite:///{db}")
        assert res.exit_code == 0, res.output
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


# --- oversized work: refused up front, or failed alone ------------------------------------

HUGE_SEARCH = """
trials = 3
[sampler]
kind = "random"
[fixed]
dataset = DATA
epochs = 1
[search]
depth = { low = 2, high = 3 }
width = { low = 8192, high = 16384 }
"""


def test_a_sampled_trial_no_model_fits_fails_alone(tmp_path, synthetic_dir):
    """Every sampled architecture here is over the parameter bound (each end of the range is
    allowed): each trial FAILs alone, naming the bound, with the parameters that led to it,
    and the run finishes its count. With no trial complete, the run has done nothing the
    user asked for: its closing line counts the failures and it exits 1."""
    spec = write_study(tmp_path / "h.toml", synthetic_dir, HUGE_SEARCH)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    res = run("-q", "run", str(spec), "--storage", url)
    assert res.exit_code == 1, res.output
    assert "3/3 trials finished (0 complete, 3 failed, 0 running)" in res.stdout
    assert "no trial completed: 3 failed alone" in res.stderr
    trials = optuna.load_study(study_name="h", storage=url).trials
    assert len(trials) == 3
    for t in trials:
        assert t.state == optuna.trial.TrialState.FAIL
        assert t.user_attrs["fail_reason"] == "invalid_config"
        assert "20,000,000 parameters" in t.user_attrs["fail_message"]
        assert {"depth", "width_1", "width_2"} <= set(t.params)  # what led to it is kept


def test_an_allocation_that_fails_ends_its_stack_alone(synthetic_dir, monkeypatch):
    import mnist_search.training.population as population
    from mnist_search import TrainConfig, load_data
    from mnist_search.training.population import Population

    data = load_data(str(synthetic_dir))
    pop = Population[int](data, "cpu", order_seed=None)
    small = TrainConfig(dataset=str(synthetic_dir), hidden=(16,), epochs=1, device="cpu")
    big = TrainConfig(dataset=str(synthetic_dir), hidden=(32, 32), epochs=1, device="cpu")
    pop.add([(0, small), (1, big)])
    real = population.epoch_reports

    def allocate(stack, *args, **kwargs):
        if stack.shapes[0][0] == 32:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: "
                               "can't allocate memory: you tried to allocate 3 TB")
        return real(stack, *args, **kwargs)

    monkeypatch.setattr(population, "epoch_reports", allocate)
    ended = dict(pop.run_epoch())
    assert isinstance(ended[1], RuntimeError)  # the big stack ended with its error
    assert len(pop) == 0
    monkeypatch.setattr(population, "epoch_reports", real)
    alone = Population[int](data, "cpu", order_seed=None)
    alone.add([(0, small)])
    expected = dict(alone.run_epoch())[0]
    # the small one trained to its end, as it trains without the big one beside it
    assert ended[0].train_loss == expected.train_loss
    assert ended[0].test_accuracy == expected.test_accuracy


def _model_file(path: Path, config: dict, tensors: dict) -> Path:
    from safetensors.torch import save_file

    from mnist_search.training.model_file import FORMAT

    save_file(tensors, str(path), metadata={"format": FORMAT,
                                            "config": json.dumps(config)})
    return path


def test_a_model_file_cannot_make_us_allocate_what_it_does_not_hold(tmp_path):
    import torch

    small = {"net.0.weight": torch.zeros(16, 784), "net.0.bias": torch.zeros(16),
             "net.2.weight": torch.zeros(10, 16), "net.2.bias": torch.zeros(10)}
    for name, config, fragment in [
            ("deep", {"hidden": [8] * 100_000}, "its config cannot be read"),
            ("wide", {"hidden": [10 ** 9]}, "its config cannot be read"),
            ("lies", {"hidden": [2048, 2048]}, "does not match its 12,730 stored weights")]:
        path = _model_file(tmp_path / f"{name}.safetensors", config, small)
        res = run("evaluate", str(path))
        assert res.exit_code != 0 and fragment in res.stderr, res.stderr
        assert len(res.stderr) < 600 and len(res.stderr.splitlines()) == 1


def test_lying_model_files_are_one_line_and_never_mapped_past_their_config(tmp_path,
                                                                           synthetic_dir,
                                                                           monkeypatch):
    """A 3 GB sparse tensor, a config nested 100,000 deep, a non-numeric accuracy, a
    100,000-character dataset: one line each (or a clean result), nothing mapped first."""
    import torch
    from safetensors.torch import save_file

    from mnist_search.training.model_file import FORMAT

    small = {"1.weight": torch.zeros(16, 784), "1.bias": torch.zeros(16),
             "3.weight": torch.zeros(10, 16), "3.bias": torch.zeros(10)}
    cfg = {"hidden": [16], "dataset": str(synthetic_dir)}
    nested = "[" * 100_000 + "]" * 100_000
    cases = {
        "deep": ({"format": FORMAT, "config": '{"hidden": ' + nested + "}"}, small,
                 "its config cannot be read"),
        "dataset": ({"format": FORMAT, "config": json.dumps({"hidden": [16],
                                                            "dataset": "d" * 100_000})},
                    small, "its config cannot be read"),
        "accuracy": ({"format": FORMAT, "config": json.dumps(cfg), "test_accuracy": "ninety"},
                     small, None),
    }
    for name, (meta, tensors, fragment) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path), metadata=meta)
        res = run("evaluate", str(path))
        if fragment is None:
            assert res.exit_code == 0 and "recorded" not in res.stdout, res.output
            continue
        assert res.exit_code == 2 and fragment in res.stderr, res.stderr[:300]
        assert len(res.stderr) < 600 and len(res.stderr.splitlines()) == 1
    # a header describing 3 GB of weights, in a sparse file: refused from its header
    import struct

    header = json.dumps({"__metadata__": {"format": FORMAT, "config": json.dumps(cfg)},
                         "1.weight": {"dtype": "F32", "shape": [750_000_000],
                                      "data_offsets": [0, 3_000_000_000]}}).encode()
    huge = tmp_path / "huge.safetensors"
    with huge.open("wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
        fh.truncate(8 + len(header) + 3_000_000_000)
    import safetensors.torch

    loaded = []
    monkeypatch.setattr(safetensors.torch, "load_file", lambda *a, **k: loaded.append(a))
    res = run("evaluate", str(huge))
    assert res.exit_code == 2, res.stderr[:300]
    assert "does not match its 750,000,000 stored weights" in res.stderr
    assert loaded == []  # refused from the header: the 3 GB were never mapped


def test_every_fail_reason_is_one_vocabulary_and_documented():
    from mnist_search.errors import ConfigError, NonFiniteLossError
    from mnist_search.search.lifecycle import DETERMINISTIC_FAILURES, fail_reason
    from mnist_search.training.train import OutOfTime

    cases = {NonFiniteLossError(2, float("nan")): "nonfinite",
             ConfigError("hidden", [1], "x"): "invalid_config",
             RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"): "out_of_memory",
             MemoryError(): "out_of_memory", OutOfTime(1): "timeout",
             KeyboardInterrupt(): "interrupted", ValueError("x"): "error"}
    assert {fail_reason(e) for e in cases} == set(cases.values())
    assert all(fail_reason(e) == reason for e, reason in cases.items())
    page = (Path(__file__).resolve().parent.parent / "docs" / "runs-and-workers.md").read_text()
    for reason in {*cases.values(), "stale", *DETERMINISTIC_FAILURES}:
        assert f"`{reason}`" in page, reason


# --- data files: what a run trains on is what was verified -------------------------------

def _copy_data(synthetic_dir: Path, tmp_path: Path) -> Path:
    import shutil

    from mnist_search.data import FILES

    data = tmp_path / "data"
    data.mkdir()
    for f in FILES:
        shutil.copy(synthetic_dir / f, data / f)
    return data


def test_an_edit_that_keeps_size_and_mtime_is_caught(synthetic_dir, tmp_path):
    from mnist_search.data import clear_cache, load_data
    from mnist_search.errors import DataError

    data = _copy_data(synthetic_dir, tmp_path)
    load_data(str(data))  # verified, and its digests cached by (size, mtime)
    clear_cache()
    target = data / "train-images-idx3-ubyte"
    st = target.stat()
    blob = bytearray(target.read_bytes())
    blob[5000] ^= 0xFF  # one pixel
    target.write_bytes(bytes(blob))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(DataError) as err:
        load_data(str(data))
    assert "content changed since it was verified" in str(err.value)
    clear_cache()


@pytest.mark.parametrize("damage", ["zero items", "symlink loop"])
def test_empty_or_looping_data_files_are_one_line(synthetic_dir, tmp_path, damage):
    import struct

    data = _copy_data(synthetic_dir, tmp_path)
    labels = data / "t10k-labels-idx1-ubyte"
    if damage == "zero items":
        labels.write_bytes(struct.pack(">II", 2049, 0))
    else:
        labels.unlink()
        os.symlink(labels, labels)  # points at itself
    res = run("train", "--dataset", str(data), "--epochs", "1", "--device", "cpu")
    assert res.exit_code != 0 and "internal error" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and str(labels) in res.stderr
    assert ("holds no items" if damage == "zero items" else "symbolic links") in res.stderr


def test_confirm_of_an_unreadable_stored_config_writes_nothing(small_db, tmp_path):
    import sqlite3

    db = tmp_path / "copy.db"
    src, dst = sqlite3.connect(small_db[len("sqlite:///"):]), sqlite3.connect(db)
    src.backup(dst)  # (a WAL database: copying the file alone may miss its last commits)
    src.close()
    dst.close()
    url = f"sqlite:///{db}"
    study = optuna.load_study(study_name="t", storage=url)
    best = max((t for t in study.trials if t.value is not None), key=lambda t: t.value)
    con = sqlite3.connect(db)
    con.execute("UPDATE trial_user_attributes SET value_json = ? WHERE trial_id = ? AND "
                "key = 'config'", (json.dumps({"hidden": [16], "lr": -1.0}), best._trial_id))
    con.commit()
    con.close()
    res = run("confirm", "t", "--storage", url)
    assert res.exit_code == 2 and "stored config cannot be trained again" in res.stderr
    assert "t-confirm" not in optuna.get_all_study_names(storage=url)


# --- a database edited outside Optuna -------------------------------------------------------

@pytest.mark.parametrize("command", [["show", "s"], ["studies"], ["best", "s"]])
def test_a_tampered_database_names_the_trial_and_attribute(tmp_path, command):
    """A stored value that is not JSON (edited by hand, or damaged) is one line naming the
    trial, the study and the attribute, not an internal error."""
    import sqlite3

    db = tmp_path / "t.db"
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{db}")
    for i in range(3):
        trial = study.ask()
        trial.set_user_attr("config", {"lr": 0.01 * (i + 1)})
        study.tell(trial, float(i))
    con = sqlite3.connect(db)
    con.execute("UPDATE trial_user_attributes SET value_json = '{broken' WHERE key = 'config' "
                "AND trial_id = (SELECT trial_id FROM trials WHERE number = 1)")
    con.commit()
    con.close()
    res = run(*command, "--storage", f"sqlite:///{db}")
    assert res.exit_code == 1
    line = res.stderr.strip()
    assert "\n" not in line and "internal error" not in line, line
    assert "trial 1 of study 's', its user attribute 'config', is not valid JSON" in line


@pytest.mark.parametrize("edit", [
    "UPDATE trials SET state = 'BOGUS' WHERE number = 1",
    "UPDATE study_directions SET direction = 'SIDEWAYS'",
    "UPDATE trials SET datetime_start = 'not a date' WHERE number = 1",
    "UPDATE trial_params SET distribution_json = '{\"name\": \"Bogus\", \"attributes\": {}}'",
])
@pytest.mark.parametrize("command", [["show", "s"], ["studies"], ["best", "s"]])
def test_a_database_edited_outside_optuna_is_one_line_not_an_internal_error(tmp_path, edit,
                                                                             command):
    import sqlite3

    db = tmp_path / "t.db"
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{db}",
                                direction="maximize")
    for i in range(3):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        study.tell(trial, float(i))
    with sqlite3.connect(db) as con:
        con.execute(edit)
    res = run(*command, "--storage", f"sqlite:///{db}")
    line = res.stderr.strip()
    assert res.exit_code == 1 and "\n" not in line and "internal error" not in line, line
    assert "edited or damaged outside Optuna" in line and len(line) < 600
    named = {"state": "trial 1 of study 's', its state 'BOGUS'",
             "direction": "study 's', its direction 'SIDEWAYS'",
             "datetime_start": "trial 1 of study 's', its time 'not a date'",
             "distribution_json": "the distribution of its parameter 'x'"}
    assert next(v for k, v in named.items() if k in edit) in line, line


def test_optunas_not_found_answers_do_not_search_the_database_for_a_damaged_row(
        tmp_path, monkeypatch):
    """A new study's name, the best trial before one is complete (every progress poll until
    then) and a trial number not yet asked are answers, not damage: the search for a row
    Optuna cannot read back (every row of every study) is left for real errors."""
    from mnist_search.storage import retry
    from mnist_search.storage.connect import make_storage

    searched: list[str] = []
    monkeypatch.setattr(retry, "damaged_row", lambda engine: searched.append("row"))
    storage = make_storage(f"sqlite:///{tmp_path / 't.db'}")
    with pytest.raises(KeyError):
        storage.get_study_id_from_name("no such study")
    study = optuna.create_study(study_name="s", storage=storage)
    with pytest.raises(ValueError):
        _ = study.best_trial
    with pytest.raises(KeyError):
        storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name("s"), 7)
    assert searched == []

    def bogus_state() -> None:
        raise KeyError("BOGUS")  # as TrialState["BOGUS"] does for a state edited by hand

    with pytest.raises(KeyError):
        storage.retrying("get_all_trials", bogus_state)
    assert searched == ["row"]


def test_rerun_refuses_stored_values_the_machine_cannot_run_in_a_bounded_line(small_db,
                                                                             tmp_path):
    import sqlite3

    db = tmp_path / "copy.db"
    _copy_db(Path(small_db[len("sqlite:///"):]), db)
    url = f"sqlite:///{db}"
    with sqlite3.connect(db) as con:
        con.execute("UPDATE trial_user_attributes SET value_json = '1000000000' "
                    "WHERE key = 'threads'")
        con.execute("UPDATE trial_user_attributes SET value_json = ? WHERE key = 'stack' AND "
                    "trial_id = (SELECT trial_id FROM trials WHERE number = 1)",
                    (json.dumps(list(range(2_000_000))),))
    for number in ("0", "1"):
        res = run("rerun", "t", number, "--storage", url)
        assert res.exit_code in (1, 2) and "internal error" not in res.stderr, res.output
        assert len(res.stderr) < 2100 and len(res.stderr.splitlines()) == 1
    assert "threads" in run("rerun", "t", "0", "--storage", url).stderr


# --- study files a reader cannot trust ------------------------------------------------------

@pytest.mark.parametrize("make, fragment", [
    (lambda p: p.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n"), "nested too deep"),
    (lambda p: p.write_text("seed = " + "9" * 5000 + "\n"), "refuses"),
    (lambda p: p.write_text("description = '" + "x" * 1_100_000 + "'\n"), "larger than"),
    (lambda p: os.mkfifo(p), "not a regular file"),
    (lambda p: p.symlink_to("/dev/zero"), "not a regular file"),
])
def test_pathological_study_files_are_one_line(tmp_path, make, fragment):
    path = tmp_path / "s.toml"
    make(path)
    for command in ("check", "run"):
        res = run(command, str(path), "--storage", f"sqlite:///{tmp_path / 's.db'}") \
            if command == "run" else run(command, str(path))
        assert res.exit_code == 2, res.output
        out = res.stderr if command == "run" else res.stdout
        assert fragment in out and "internal error" not in out, out[:300]
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("name", ["a\nb", "nul\0name", "../../etc/passwd", "x" * 10_000_000,
                                  ".."])
def test_load_spec_refuses_names_no_storage_or_folder_should_hold(name):
    from mnist_search.spec import SpecError, load_spec

    with pytest.raises(SpecError, match="name"):
        load_spec({"name": name, "description": "x", "fixed": {"epochs": 1}})


def test_load_spec_turns_what_code_can_build_into_one_line():
    from mnist_search.spec import SpecError, load_spec

    loop: list = []
    loop.append(loop)
    for raw in ({"description": "x", "reference": [{"label": "a", "note": loop}]},
                {"description": "x", "reference": [{"label": "a", "group": {1: "a", "b": 2}}]}):
        with pytest.raises(SpecError) as err:
            load_spec(raw)
        assert "\n" not in str(err.value)


def test_the_dashboard_answers_only_to_the_host_it_was_bound_for(small_db, caplog):
    """DNS rebinding: a page that points its own name at 127.0.0.1 reaches the port, but
    not the write API (rename, delete with the models)."""
    import http.client

    import mnist_search as ms

    dash = ms.dashboard(small_db)
    try:
        def get(host: str) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", dash.port, timeout=10)
            conn.request("GET", "/api/studies", headers={"Host": host})
            status = conn.getresponse().status
            conn.close()
            return status

        for host in (f"127.0.0.1:{dash.port}", f"localhost:{dash.port}", "127.0.0.1"):
            assert get(host) == 200, host
        for host in ("rebind.attacker.invalid", f"rebind.attacker.invalid:{dash.port}",
                     "127.0.0.1:1", ""):
            assert get(host) == 421, host
        conn = http.client.HTTPConnection("127.0.0.1", dash.port, timeout=10)
        conn.request("DELETE", "/api/studies/1", headers={"Host": "rebind.attacker.invalid"})
        assert conn.getresponse().status == 421
    finally:
        dash.stop()
    assert optuna.get_all_study_names(storage=small_db) == ["t"]
    with caplog.at_level("WARNING", logger="mnist_search"):
        wide = ms.dashboard(small_db, host="0.0.0.0")
        wide.stop()
    assert any("no authentication" in r.getMessage() for r in caplog.records)


def test_the_markdown_report_embeds_no_raw_html_from_the_storage(tmp_path, synthetic_dir):
    body = STUDY.replace('label = "base"', 'label = "<img src=x onerror=alert(1)>"')
    spec = tmp_path / "x.toml"
    spec.write_text('description = "<script>alert(1)</script>"\nseed = 1\n'
                    + body.replace("DATA", json.dumps(str(synthetic_dir))))
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert run("-q", "run", str(spec), "--storage", url).exit_code == 0
    res = run("report", "x", "--storage", url, "-o", str(tmp_path / "rep"), "--format", "md")
    assert res.exit_code == 0, res.output
    page = (tmp_path / "rep" / "report.md").read_text()
    assert "&lt;script&gt;" in page and "<script" not in page and "<img src=x" not in page


def test_train_says_out_of_memory_in_one_line(synthetic_dir, monkeypatch):
    import mnist_search.training.population as population

    def allocate(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 3932160000 bytes")

    monkeypatch.setattr(population, "epoch_reports", allocate)
    res = run("train", "--dataset", str(synthetic_dir), "--epochs", "1", "--hidden", "64")
    assert res.exit_code == 1, res.output
    assert res.stderr.startswith("mnist-search: error: out of memory training 784-64-10")
    assert "internal error" not in res.stderr and len(res.stderr.splitlines()) == 1


def test_a_killed_runs_temp_folder_is_removed_by_the_next_run_and_nothing_else(tmp_path):
    import tempfile

    from mnist_search.workers.pool import _sweep_orphans

    dead = subprocess.Popen(["true"])
    dead.wait()
    root = Path(tempfile.gettempdir())
    orphan = Path(tempfile.mkdtemp(prefix=f"mnist-search-{dead.pid}-", dir=root))
    (orphan / "worker-0.err").write_text("")
    alive = Path(tempfile.mkdtemp(prefix=f"mnist-search-{os.getpid()}-", dir=root))
    foreign = Path(tempfile.mkdtemp(prefix=f"mnist-search-{dead.pid}-", dir=root))
    (foreign / "notes.txt").write_text("not ours")
    try:
        _sweep_orphans()
        assert not orphan.exists()
        assert alive.is_dir() and (foreign / "notes.txt").read_text() == "not ours"
    finally:
        for folder in (orphan, alive, foreign):
            if folder.exists():
                for f in folder.iterdir():
                    f.unlink()
                folder.rmdir()


def test_our_own_attributes_edited_outside_are_read_without_an_internal_error(small_db,
                                                                              tmp_path):
    import sqlite3

    db = tmp_path / "copy.db"
    _copy_db(Path(small_db[len("sqlite:///"):]), db)
    url = f"sqlite:///{db}"
    with sqlite3.connect(db) as con:
        con.execute("UPDATE study_user_attributes SET value_json = '\"oops\"' "
                    "WHERE key = 'objectives'")
        con.execute("UPDATE trial_user_attributes SET value_json = '\"ninety\"' WHERE "
                    "key = 'test_accuracy' AND trial_id = (SELECT trial_id FROM trials "
                    "WHERE number = 2)")
        con.execute("UPDATE trial_user_attributes SET value_json = '{\"a\": 1}' WHERE "
                    "key = 'train_loss' AND trial_id = (SELECT trial_id FROM trials "
                    "WHERE number = 0)")
    for argv in (["show", "t"], ["best", "t"], ["export", "t", "-o", str(tmp_path / "x.csv")],
                 ["report", "t", "-o", str(tmp_path / "rep")], ["rerun", "t", "0"]):
        res = run(*argv, "--storage", url)
        assert "internal error" not in res.stderr and "Traceback" not in res.output, argv
        assert res.exit_code in (0, 1), (argv, res.output)


def test_a_runs_options_record_shows_no_password():
    """RunOptions, logged whole at debug level, hides the storage URL's password."""
    from mnist_search.workers.pool import RunOptions

    shown = repr(RunOptions(storage="postgresql+psycopg://me:Wq8-opts-pw@db/s", workers=2))
    assert "Wq8-opts-pw" not in shown and "workers=2" in shown and "me:***@db" in shown
