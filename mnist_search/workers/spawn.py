"""Starting a run's worker processes, as early as the command allows.

A worker's start-up is mostly imports (torch above all) and its data; it starts before the
study is ready and waits for its orders on stdin. This module is light on purpose (no torch,
no Optuna): the CLI starts a run's workers with it before it imports the rest of the run
(`start_early`), so their imports overlap the parent's; run_study takes them over
(`take_early`) or starts its own. In a notebook, run_study starts the next run's workers as
it returns (`start_ahead`), so a second call finds them warm instead of importing torch again.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from ..spec import StudySpec

__all__ = ["LAUNCH", "WARM_KEEP_S", "WARM_KEYS", "Pool", "check_workers", "most_workers",
           "release_warm", "start_ahead", "start_early", "take_early", "threads_per_worker"]

LAUNCH = "from mnist_search.workers.launch import run; run()"  # a worker process's entry
WARM_KEYS = ("dataset", "val_size", "normalize", "batch_size")  # what the warm-up loads


def most_workers() -> int:
    """The most workers a run may start: 4 per core (at least 16). More is a typo, and each
    worker loads the dataset (about 1 GB for MNIST) before the run can say so."""
    return max(16, 4 * (os.cpu_count() or 1))


def check_workers(workers: int, warn: bool = True) -> None:
    """Refuse a worker count past most_workers(); warn once above the machine's cores."""
    from ..config import is_int
    from ..errors import ConfigError

    if not (is_int(workers) and 1 <= workers <= most_workers()):
        raise ConfigError("workers", workers, f"an integer in [1, {most_workers()}] (4 per "
                          f"core on this machine's {os.cpu_count() or 1})")
    cores = os.cpu_count() or 1
    if warn and workers > cores:
        import logging

        logging.getLogger("mnist_search").warning(
            "%d workers on %d cores: they share the cores, so the run is no faster than "
            "with %d, and each loads its own copy of the data", workers, cores, cores)


def threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


class Pool:
    """Worker processes started before the study is ready, so that their torch import (about
    2 s) overlaps the parent's storage work; each then waits for its orders on stdin.

    Closing stdin without orders (cancel) ends a worker quietly: it has touched nothing yet.
    """

    def __init__(self, workers: int, spec: StudySpec, device: str) -> None:
        self.started = time.monotonic()  # what the workers' start-up log counts from
        self.ahead = False  # started for a call yet to come (start_ahead), not this one
        self.expiry: threading.Timer | None = None  # stops it unused (start_ahead)
        self.threads = threads_per_worker(workers)
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads),
               "MKL_NUM_THREADS": str(self.threads)}
        warm = {k: spec.fixed[k] for k in WARM_KEYS if k in spec.fixed}
        self.key = _key(workers, spec, device)
        # Workers import this package from where this process found it (a folder put on
        # sys.path by hand, as on Colab, included), appended so it shadows nothing; the
        # study's source stays on the command line so that `ps` tells runs apart.
        here = str(Path(__file__).resolve().parents[2])
        boot = f"import sys; sys.path.append({here!r}); {LAUNCH}"
        cmd = [sys.executable, "-c", boot, "--wait", spec.path, device, json.dumps(warm)]
        self.procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, env=env, text=True)
                      for _ in range(workers)]

    def fits(self, workers: int, spec: StudySpec, device: str) -> bool:
        """Whether these workers warmed up for this run (its data, device and count, in the
        environment this process has now: a data folder or setting changed in between, as
        a notebook may, is not the one they read)."""
        return self.key == _key(workers, spec, device)

    def alive(self) -> bool:
        """Whether every worker still waits for its orders (none was killed meanwhile)."""
        return all(p.poll() is None for p in self.procs)

    def start(self, orders: list[str]) -> None:
        """Each worker's orders (one JSON line each), in order."""
        for p, line in zip(self.procs, orders, strict=True):
            stdin: IO[str] | None = p.stdin
            try:
                assert stdin is not None
                stdin.write(line + "\n")
                stdin.close()
            except OSError:  # it died before its orders: its exit code tells the story
                pass

    def cancel(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()  # still importing or waiting: nothing of the study is held
            p.wait()
            if p.stdin and not p.stdin.closed:
                try:
                    p.stdin.close()
                except OSError:
                    pass


def _key(workers: int, spec: StudySpec, device: str) -> tuple[object, ...]:
    warm = {k: spec.fixed[k] for k in WARM_KEYS if k in spec.fixed}
    return (workers, spec.path, device, json.dumps(warm, sort_keys=True),
            sorted(os.environ.items()))


_early: list[Pool] = []  # the pool start_early or start_ahead made, until run_study takes it
_lock = threading.Lock()  # take_early, an expiry's timer thread and release_warm race
_early_registered: list[bool] = []  # release_warm is registered with atexit once
WARM_KEEP_S = 600.0  # how long workers started ahead wait for the call they are for


def start_early(workers: int, spec: StudySpec, device: str,
                started: float | None = None) -> None:
    """Start a run's workers now, before the caller imports what the run needs (Optuna,
    SQLAlchemy: about half a second it would otherwise spend before starting them);
    run_study takes them over if it is called for the same workers, study data and device,
    and stops them otherwise. `started`: time.monotonic() when the command started."""
    pool = Pool(workers, spec, device)
    pool.started = started or pool.started
    with _lock:
        _early.append(pool)


def take_early() -> Pool | None:
    """The pool start_early or start_ahead made (the caller owns it now), if any is alive."""
    with _lock:
        pool = _early.pop() if _early else None
    if pool is not None and pool.expiry is not None:
        pool.expiry.cancel()
    if pool is not None and not pool.alive():  # one was killed while it waited: start anew
        pool.cancel()
        return None
    return pool


def start_ahead(workers: int, spec: StudySpec, device: str) -> None:
    """Start the workers of a run likely to come (the same study, workers and device, as a
    notebook runs a cell again), so that its run_study takes them over warm; a call that
    differs stops them. Waiting, they hold their data (about 1 GB each for MNIST) and no
    trial; they are stopped after WARM_KEEP_S unused, by release_warm(), or at this
    process's exit (were it killed, their stdin closes and they end)."""
    release_warm()
    pool = Pool(workers, spec, device)
    pool.ahead = True
    pool.expiry = threading.Timer(WARM_KEEP_S, _expire, args=(pool,))
    pool.expiry.daemon = True
    with _lock:
        if not _early_registered:
            atexit.register(release_warm)
            _early_registered.append(True)
        _early.append(pool)
    pool.expiry.start()


def _expire(pool: Pool) -> None:
    with _lock:
        if pool not in _early:
            return  # taken (or released) meanwhile
        _early.remove(pool)
    pool.cancel()


def release_warm() -> None:
    """Stop the workers started for a run to come (start_ahead), if any are waiting."""
    with _lock:
        pools = list(_early)
        _early.clear()
    for pool in pools:
        if pool.expiry is not None:
            pool.expiry.cancel()
        pool.cancel()
