"""Start worker processes and follow the study until they finish.

Progress is read from the storage, so one bar covers every worker (Optuna's own bar is per
process). Ctrl-C or SIGTERM is passed on to the workers, which end their running trial as
FAIL and exit; nothing else is lost.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from .spec import StudySpec
from .worker import DEFAULT_HEARTBEAT_S, WorkerArgs

log = logging.getLogger(__name__)

POLL_S = 0.5
STOP_GRACE_S = 30.0


class Pool:
    """Worker processes started before the study is ready, so that their torch import (about
    2 s) overlaps the parent's storage work; each then waits for its WorkerArgs on stdin.

    Closing stdin without orders (cancel) ends a worker quietly: it has touched nothing yet.
    """

    def __init__(self, workers: int, threads: int, spec_path: str, device: str) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        self.threads = threads
        cmd = [sys.executable, "-m", "mnist_search.worker", "--wait", spec_path, device]
        self.procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, env=env, text=True)
                      for _ in range(workers)]

    def start(self, args: list[WorkerArgs]) -> None:
        for p, a in zip(self.procs, args, strict=True):
            try:
                p.stdin.write(json.dumps(dataclasses.asdict(a)) + "\n")
                p.stdin.close()
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


def run_workers(spec: StudySpec, url: str, target: int, *, pool: Pool, device: str,
                timeout: float | None, progress: bool | None, heartbeat: int | None,
                population: int = 1, study: Any = None) -> tuple[bool, list[str]]:
    """Give the pool's workers their orders and follow them to `target` finished trials;
    returns (interrupted, error lines)."""
    level = logging.getLogger("mnist_search").getEffectiveLevel()
    show_bar = sys.stderr.isatty() and level <= logging.INFO if progress is None else progress
    workers = len(pool.procs)
    base = WorkerArgs(spec=spec.path, url=url, target=target, threads=pool.threads,
                      device=device, deadline=None if timeout is None else time.time() + timeout,
                      heartbeat=DEFAULT_HEARTBEAT_S if heartbeat is None else heartbeat,
                      log_level=logging.WARNING if show_bar else level, workers=workers,
                      population=population)
    procs = pool.procs
    with tempfile.TemporaryDirectory(prefix="mnist-search-") as tmp:
        errs = [os.path.join(tmp, f"worker-{i}.err") for i in range(workers)]
        pool.start([dataclasses.replace(base, index=i, error_file=errs[i])
                    for i in range(workers)])
        interrupted = False
        try:
            _follow(spec, url, target, procs, show_bar, study)
        except KeyboardInterrupt:
            interrupted = True
            _stop(procs)
        codes = [p.wait() for p in procs]
        stopped = (130, -signal.SIGINT, -signal.SIGTERM)
        interrupted = interrupted or any(c in stopped for c in codes)
        errors = [_worker_error(i, c, errs[i]) for i, c in enumerate(codes)
                  if c not in (0, *stopped)]
    return interrupted, errors


def _worker_error(index: int, code: int, error_file: str) -> str:
    try:
        with open(error_file) as fh:
            return f"worker {index}: {fh.read().strip()}"
    except OSError:
        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return f"worker {index} {how}; its running trial is failed by the next worker " \
            "after the heartbeat grace, or by: mnist-search reap STUDY"


def _stop(procs: list[subprocess.Popen]) -> None:
    """Pass the interrupt on; give workers time to tell FAIL, then kill stragglers."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()


def _wait_any(procs: list[subprocess.Popen], seconds: float) -> None:
    """Sleep up to `seconds`, returning as soon as a worker exits (so the end is not late)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and all(p.poll() is None for p in procs):
        time.sleep(0.02)


def _follow(spec: StudySpec, url: str, target: int, procs: list[subprocess.Popen],
            show_bar: bool, study: Any = None) -> None:
    import optuna

    from .storage import make_storage
    from .study import counts

    if study is None:
        study = optuna.load_study(study_name=spec.name, storage=make_storage(url))
    bar = _bar(spec.name, target) if show_bar else None
    last_done = -1
    try:
        while any(p.poll() is None for p in procs):
            _wait_any(procs, POLL_S)
            c = counts(study)
            if c["done"] == last_done:
                continue
            last_done = c["done"]
            best = _best(study)
            if bar is not None:
                bar.n = min(c["done"], target)
                bar.set_postfix_str("" if best is None else f"best {best:.2f}")
                bar.refresh()
            else:
                log.info("%s: %d/%d trials finished, %d running%s", spec.name, c["done"],
                         target, c["running"], "" if best is None else f", best {best:.2f}")
    finally:
        if bar is not None:
            bar.close()


def _bar(name: str, total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="trial", file=sys.stderr, dynamic_ncols=True)


def _best(study: Any) -> float | None:
    try:
        return float(study.best_value)
    except ValueError:
        return None
