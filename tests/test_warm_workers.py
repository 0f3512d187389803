"""Workers kept warm for the next run_study (a notebook runs a cell again): the next call
with the same study, workers and device takes them over and trains with them; a call that
differs stops them, one killed while it waited is replaced, and release_warm, or their
time unused running out, stops them."""

from __future__ import annotations

import os
import signal
import time

import optuna
import pytest
from test_study_in_memory import text

import mnist_search as ms
from mnist_search.workers import spawn


@pytest.fixture()
def spec(synthetic_dir):
    yield ms.load_spec(text(synthetic_dir))
    spawn.release_warm()


def pids(url: str, numbers: range) -> set[int]:
    trials = optuna.load_study(study_name="cell", storage=url).get_trials()
    return {int(t.user_attrs["worker"].rsplit(":", 1)[1]) for t in trials if t.number in numbers}


def waiting(timeout: float = 60.0) -> spawn.Pool:
    """The warm pool, once its workers are past their imports (or the timeout)."""
    (pool,) = spawn._early
    end = time.monotonic() + timeout
    while time.monotonic() < end and not all(_waits_on_stdin(p.pid) for p in pool.procs):
        time.sleep(0.2)
    return pool


def _waits_on_stdin(pid: int) -> bool:
    try:  # blocked in read(2) on its stdin pipe: warmed up, waiting for orders
        with open(f"/proc/{pid}/wchan") as fh:
            return "pipe" in fh.read()
    except OSError:
        return False


def test_the_next_call_trains_with_the_warm_workers(tmp_path, spec):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    first = ms.run_study(spec, trials=2, workers=2, storage=url, progress=False, keep_warm=True)
    assert first.complete
    warm = {p.pid for p in waiting().procs}
    assert not warm & pids(url, range(2))  # new processes, for the next call
    second = ms.run_study(spec, trials=4, workers=2, storage=url, progress=False)
    assert second.complete and not second.worker_errors
    assert pids(url, range(2, 4)) <= warm  # trained by them
    assert spawn._early == []  # not kept again: outside a notebook that is asked for


def test_a_killed_warm_worker_is_replaced_and_a_different_call_stops_them(tmp_path, spec,
                                                                          monkeypatch):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    ms.run_study(spec, trials=1, workers=2, storage=url, progress=False, keep_warm=True)
    pool = waiting()
    os.kill(pool.procs[0].pid, signal.SIGKILL)
    pool.procs[0].wait()
    again = ms.run_study(spec, trials=2, workers=2, storage=url, progress=False,
                         keep_warm=True)
    assert again.complete and not again.worker_errors  # fresh workers, no error
    assert not pids(url, range(1, 2)) & {p.pid for p in pool.procs}
    kept = waiting().procs
    monkeypatch.setenv("MNIST_SEARCH_STORAGE_RETRY", "30")  # the workers read another value
    other = ms.run_study(spec, trials=3, workers=2, storage=url, progress=False,
                         keep_warm=True)
    assert other.complete and not other.worker_errors
    assert all(p.poll() is not None for p in kept)  # stopped: started in another environment
    assert not pids(url, range(2, 3)) & {p.pid for p in kept}
    kept = waiting().procs
    fewer = ms.run_study(spec, trials=4, workers=1, storage=url, progress=False)
    assert fewer.complete and not fewer.worker_errors
    assert all(p.poll() is not None for p in kept)  # stopped: they were for 2 workers
    assert not pids(url, range(3, 4)) & {p.pid for p in kept}


def test_release_warm_stops_them_and_nothing_is_kept_by_default(tmp_path, spec):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    ms.run_study(spec, trials=1, storage=url, progress=False, keep_warm=True)
    procs = waiting().procs
    spawn.release_warm()
    assert spawn._early == [] and all(p.poll() is not None for p in procs)
    ms.run_study(spec, trials=2, storage=url, progress=False)  # not in a kernel
    assert spawn._early == []


def test_warm_workers_unused_for_their_time_are_stopped(tmp_path, spec, monkeypatch):
    monkeypatch.setattr(spawn, "WARM_KEEP_S", 1.0)
    url = f"sqlite:///{tmp_path / 'e.db'}"
    ms.run_study(spec, trials=1, storage=url, progress=False, keep_warm=True)
    (pool,) = spawn._early
    assert pool.procs and all(p.poll() is None for p in pool.procs)  # kept warm: alive
    end = time.monotonic() + 30
    while spawn._early and time.monotonic() < end:
        time.sleep(0.1)
    assert spawn._early == []
    for p in pool.procs:  # stopped and reaped: gone from the system
        p.wait(timeout=30)
        with pytest.raises(ProcessLookupError):
            os.kill(p.pid, 0)
    later = ms.run_study(spec, trials=2, storage=url, progress=False)
    assert later.complete and not later.worker_errors
