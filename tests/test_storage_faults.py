"""Storage faults end in one line naming the storage, the real cause and what to do;
the database stays intact with every trial finished before the fault."""

from __future__ import annotations

import resource
import sqlite3
import subprocess
import time

import pytest
from optuna.trial import TrialState

from helpers import (
    exe,
    integrity,
    read_only_bind,
    start_run,
    trials,
    worker_pids,
    write_study,
)

STUDY = """
[sampler]
kind = "random"
[fixed]
dataset = DATA
epochs = 1
[search]
lr = { low = 0.001, high = 0.1, log = true }
"""


@pytest.fixture()
def seeded(tmp_path, synthetic_dir):
    """A study with 3 finished trials, and its file."""
    spec = write_study(tmp_path / "faults.toml", synthetic_dir, STUDY)
    db = tmp_path / "f.db"
    proc = start_run(spec, f"sqlite:///{db}", "--trials", "3")
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    return spec, db


def assert_intact(db, at_least=3):
    assert integrity(db) == "ok"
    done = [t for t in trials(f"sqlite:///{db}", "faults") if t.state == TrialState.COMPLETE]
    assert len(done) >= at_least


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("mnist-search: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_disk_full(seeded):
    spec, db = seeded
    limit = db.stat().st_size + 48 * 1024  # the file may grow by 48 KiB, then EFBIG

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = start_run(spec, f"sqlite:///{db}", "--trials", "400", preexec_fn=cap)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 1
    line = one_line_error(err)
    assert f"sqlite:///{db}" in line
    assert "full" in line.lower() or "i/o" in line.lower()
    assert_intact(db)
    # what the fault left RUNNING is cleaned up by reap (the disk is fine again); heartbeats
    # are stored to the second, so let the last one age past the 1 s grace first
    time.sleep(2)
    subprocess.run([exe("mnist-search"), "reap", "faults", "--storage", f"sqlite:///{db}",
                    "--older-than", "0.001"], check=True, capture_output=True)
    assert not [t for t in trials(f"sqlite:///{db}", "faults")
                if t.state == TrialState.RUNNING]


def test_read_only_database(seeded):
    spec, db = seeded
    url = f"sqlite:///file:{db}?mode=ro&uri=true"
    proc = start_run(spec, url, "--trials", "5")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    line = one_line_error(err)
    assert "readonly" in line and "read-only" in line and str(db) in line
    assert_intact(db)


def test_read_only_directory(seeded, tmp_path):
    """A read-only bind mount: root ignores permission bits, but not a read-only mount."""
    spec, db = seeded
    ro = tmp_path / "ro"
    ro.mkdir()
    with read_only_bind(tmp_path, ro):
        proc = start_run(spec, f"sqlite:///{ro / db.name}", "--trials", "5")
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    line = one_line_error(err)
    assert str(ro / db.name) in line and "read-only" in line
    assert_intact(db)


@pytest.mark.slow  # about 15 s a case
@pytest.mark.parametrize("timeout_s,retry_s,expect_ok,retried", [
    ("1", "0", False, False),  # retrying off: the busy timeout's error, as it was
    ("1", "3", False, True),  # retried, but the lock outlasts the window
    ("1", "60", True, True),  # held 15 s past a 1 s busy timeout: retried until released
    ("60", "60", True, False),  # the busy timeout alone outwaits it
])
def test_lock_held_by_another_process(seeded, timeout_s, retry_s, expect_ok, retried):
    spec, db = seeded
    holder = subprocess.Popen(
        ["python3", "-c", "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1], "
         "isolation_level=None); c.execute('BEGIN EXCLUSIVE'); print('held', flush=True); "
         "time.sleep(15); c.execute('ROLLBACK')", str(db)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    proc = start_run(spec, f"sqlite:///{db}", "--trials", "5",
                     env={"MNIST_SEARCH_SQLITE_TIMEOUT": timeout_s,
                          "MNIST_SEARCH_STORAGE_RETRY": retry_s})
    _, err = proc.communicate(timeout=300)
    holder.wait(timeout=30)
    assert ("database is locked); retrying for up to" in err) is retried, err
    if expect_ok:
        assert proc.returncode == 0, err
        assert_intact(db, at_least=5)
        final = trials(f"sqlite:///{db}", "faults")
        assert [t.state for t in final] == [TrialState.COMPLETE] * 5  # each told once
    else:
        assert proc.returncode == 1
        assert "database is locked" in one_line_error(err)
        assert_intact(db)


def test_unreachable_postgresql(tmp_path, synthetic_dir):
    spec = write_study(tmp_path / "faults.toml", synthetic_dir, STUDY)
    proc = start_run(spec, "postgresql+psycopg://ms:secret@127.0.0.1:1/nodb", "--trials", "1",
                     "--artifacts", str(tmp_path / "models"))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    line = one_line_error(err)
    assert "127.0.0.1:1" in line and "refused" in line.lower() and "secret" not in err
    assert worker_pids(spec) == []  # the workers started early are gone with it


@pytest.mark.parametrize("revision,advice", [("v3.0.0.d", "optuna storage upgrade"),
                                             ("v99.0.0.a", "pip install -U optuna")])
def test_schema_from_another_optuna(seeded, revision, advice):
    spec, db = seeded
    con = sqlite3.connect(str(db))
    con.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    con.commit()
    con.close()
    proc = start_run(spec, f"sqlite:///{db}", "--trials", "5")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    line = one_line_error(err)
    assert advice in line and str(db) in line
    if "upgrade" in advice:
        assert "back up" in line
    assert integrity(db) == "ok"
