"""A real PostgreSQL server on 127.0.0.1: Optuna's distributed mode, as several machines use it.

.ci/run starts the server (.ci/postgres.sh) and exports MNIST_SEARCH_TEST_PG. Run locally as
root, this file starts one itself; elsewhere it skips, saying why. In CI it must run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from optuna.trial import TrialState
from test_concurrency import FAST, free_port
from test_crash import SLOW_STUDY, TAKEOVER_STUDY, sigkill_scenario, takeover_scenario

from helpers import start_run, trials, wait_for, write_study

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def model_folder(tmp_path, monkeypatch):
    """A PostgreSQL storage has no file to keep models beside: every run here gets a folder."""
    monkeypatch.setenv("MNIST_SEARCH_ARTIFACTS", str(tmp_path / "models"))


SERVER_ENV: dict[str, str] = {}  # .ci/postgres.sh's settings for the server in use


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    url = os.environ.get("MNIST_SEARCH_TEST_PG")
    if url:
        yield url  # started by .ci/run, which stops it
        return
    why = "MNIST_SEARCH_TEST_PG is not set"
    script = str(REPO / ".ci" / "postgres.sh")
    if os.geteuid() == 0:
        # a server of this module's own (its folder and port), never the shared one at
        # .ci/postgres.sh's default place, which someone else may be using
        env = {**os.environ, "MNIST_SEARCH_PG_DIR": f"/tmp/mnist-search-pg-{uuid.uuid4().hex}",
               "MNIST_SEARCH_PG_PORT": str(free_port())}
        proc = subprocess.run(["bash", script], capture_output=True, text=True, env=env)
        if proc.returncode == 0:
            SERVER_ENV.update(env)
            try:
                yield proc.stdout.strip().splitlines()[-1]
            finally:  # the server this module started stops with it
                subprocess.run(["bash", script, "stop"], capture_output=True, check=True,
                               env=env)
                shutil.rmtree(env["MNIST_SEARCH_PG_DIR"], ignore_errors=True)
                SERVER_ENV.clear()
            return
        why = f".ci/postgres.sh failed: {proc.stderr.strip()[-300:]}"
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the PostgreSQL tests: {why}")
    pytest.skip(f"no PostgreSQL server: {why}")


class ConnectionCounter:
    """Peak number of server connections to the test database while the block runs."""

    def __init__(self, url: str) -> None:
        # autocommit: inside one transaction pg_stat_activity would be a frozen snapshot
        self.engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool,
                                               isolation_level="AUTOCOMMIT")
        self.peak = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        query = sqlalchemy.text("SELECT count(*) FROM pg_stat_activity "
                                "WHERE datname = current_database()")
        with self.engine.connect() as conn:
            while not self.stop.is_set():
                self.peak = max(self.peak, int(conn.execute(query).scalar()) - 1)
                time.sleep(0.05)

    def __enter__(self) -> ConnectionCounter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.engine.dispose()


def test_four_workers_25_trials_each_on_postgresql(pg_url, tmp_path, synthetic_dir):
    name = f"pg-{uuid.uuid4().hex[:8]}"
    spec = write_study(tmp_path / "pg.toml", synthetic_dir, FAST.replace("TRIALS", "100"),
                       name=name)
    start = time.perf_counter()
    with ConnectionCounter(pg_url) as counter:
        proc = start_run(spec, pg_url, "--workers", "4")
        out, err = proc.communicate(timeout=600)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, err
    final = trials(pg_url, name)
    assert len(final) == 100 and sorted(t.number for t in final) == list(range(100))
    assert all(t.state == TrialState.COMPLETE for t in final)
    print(f"\nPostgreSQL, 4 workers: 100 trials in {wall:.1f} s = {100 / wall:.1f} trials/s, "
          f"0 lost, 0 duplicated, peak {counter.peak} connections")
    # about 4 a worker (its pool, its heartbeat, its study lock's kept connection) and the
    # parent's: a connection left open per claim or per trial would pass 20 fast
    assert 0 < counter.peak <= 20


def test_sigkilled_worker_on_postgresql(pg_url, tmp_path, slow_synthetic_dir):
    name = f"pgkill-{uuid.uuid4().hex[:8]}"
    spec = write_study(tmp_path / "kill.toml", slow_synthetic_dir, SLOW_STUDY, name=name)
    to_fail = sigkill_scenario(pg_url, name, spec)
    print(f"\nPostgreSQL: kill -9 -> FAIL after {to_fail:.1f} s")


def test_survivor_takes_over_a_killed_run_on_postgresql(pg_url, tmp_path, slow_synthetic_dir):
    name = f"pgtake-{uuid.uuid4().hex[:8]}"
    spec = write_study(tmp_path / "take.toml", slow_synthetic_dir, TAKEOVER_STUDY, name=name)
    seconds = takeover_scenario(pg_url, name, spec)
    print(f"\nPostgreSQL: survivor exited 0 {seconds:.1f} s after the other run was killed "
          "(default heartbeat 10 s, grace 30 s)")


RESTART_STUDY = """
trials = 120
[sampler]
kind = "random"
[fixed]
dataset = DATA
epochs = 3
[search]
lr = { low = 0.001, high = 0.1, log = true }
momentum = { low = 0.0, high = 0.9 }
[[reference]]
label = "base"
[[reference]]
label = "fast"
momentum = 0.9
"""


def finished(url: str, name: str) -> int:
    return sum(t.state.is_finished() for t in trials(url, name))


@pytest.mark.parametrize("down_s", [0, 3])
def test_a_search_rides_out_a_server_restart(pg_url, tmp_path, synthetic_dir, down_s):
    """The server restarts (pg_ctl stop -m fast, `down_s` seconds down, start) while two
    workers train: the run ends 0 with every trial told exactly once and none left RUNNING,
    and says it retried."""
    if not os.environ.get("MNIST_SEARCH_TEST_PG") and os.geteuid() != 0:
        pytest.skip("restarting the server needs the one .ci/postgres.sh started")
    name = f"pgrestart-{uuid.uuid4().hex[:8]}"
    spec = write_study(tmp_path / "restart.toml", synthetic_dir, RESTART_STUDY, name=name)
    proc = start_run(spec, pg_url, "--workers", "2")
    wait_for(lambda: proc.poll() is not None or finished(pg_url, name) >= 10, 120,
             "10 finished trials")
    assert proc.poll() is None, "the run ended before the restart"
    before = finished(pg_url, name)
    subprocess.run(["bash", str(REPO / ".ci" / "postgres.sh"), "restart", str(down_s)],
                   check=True, capture_output=True, timeout=60, env=SERVER_ENV or None)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "retrying for up to 60 s" in err  # the outage was met, and ridden out
    final = trials(pg_url, name)
    assert before < 120
    assert sorted(t.number for t in final) == list(range(120))
    assert [t.state for t in final] == [TrialState.COMPLETE] * 120
    labels = [t.user_attrs.get("label") for t in final if t.user_attrs.get("label")]
    assert sorted(labels) == ["base", "fast"]
    for t in final:  # each trial's epochs were reported once each, in order
        assert sorted(t.intermediate_values) == [1, 2, 3]


SIXTEEN_STUDY = """
trials = 200
[sampler]
kind = "random"
[fixed]
dataset = DATA
epochs = 1
hidden = [16]
[search]
lr = { low = 0.001, high = 0.1, log = true }
""" + "".join(f'[[reference]]\nlabel = "ref-{i}"\nlr = {0.01 + i / 1000}\n' for i in range(8))


def test_sixteen_workers_in_four_runs_keep_the_total_exact(pg_url, tmp_path, synthetic_dir):
    """4 `run` processes of 4 workers each on one study (bench/bench_workers.py times it):
    exactly the target, numbered without gaps, nothing left RUNNING, each label once."""
    name = f"pg16-{uuid.uuid4().hex[:8]}"
    spec = write_study(tmp_path / "sixteen.toml", synthetic_dir, SIXTEEN_STUDY, name=name)
    first = start_run(spec, pg_url, "--trials", "1")  # creates the study, enqueues the labels
    assert first.wait(timeout=120) == 0
    procs = [start_run(spec, pg_url, "--workers", "4") for _ in range(4)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-1500:] for _, err in results]
    final = trials(pg_url, name)
    assert sorted(t.number for t in final) == list(range(200))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in final)
    labels = sorted(t.user_attrs["label"] for t in final if t.user_attrs.get("label"))
    assert labels == sorted(f"ref-{i}" for i in range(8))


def test_a_short_chaos_run_keeps_every_invariant(pg_url):
    """bench/bench_chaos.py, short: workers and whole runs SIGKILLed at random and the
    server restarted once while 60 trials with 8 labels run; then the total is exact,
    every label finished once, nothing RUNNING, every fail_reason documented, and a
    sample of COMPLETE trials re-runs bit for bit."""
    if not os.environ.get("MNIST_SEARCH_TEST_PG") and os.geteuid() != 0:
        pytest.skip("restarting the server needs the one .ci/postgres.sh started")
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_chaos.py"), "--url",
                           pg_url, "--seconds", "40", "--trials", "60", "--workers", "2",
                           "--restarts", "1"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **SERVER_ENV})
    print("\n" + proc.stdout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "invariants: all hold" in proc.stdout
    faults = re.search(r"(\d+) worker killed, (\d+) run killed, (\d+) server restarted",
                       proc.stdout)
    assert faults and int(faults[2]) >= 1 and int(faults[3]) == 1  # the faults were real
