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


def run_workers(spec: StudySpec, url: str, target: int, *, workers: int, threads: int,
                device: str, timeout: float | None, progress: bool | None,
                heartbeat: int | None, population: int = 1) -> tuple[bool, list[str]]:
    """Run `workers` processes to `target` finished trials; (interrupted, error lines)."""
    level = logging.getLogger("mnist_search").getEffectiveLevel()
    show_bar = sys.stderr.isatty() and level <= logging.INFO if progress is None else progress
    base = WorkerArgs(spec=spec.path, url=url, target=target, threads=threads, device=device,
                      deadline=None if timeout is None else time.time() + timeout,
                      heartbeat=DEFAULT_HEARTBEAT_S if heartbeat is None else heartbeat,
                      log_level=logging.WARNING if show_bar else level, workers=workers,
                      population=population)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory(prefix="mnist-search-") as tmp:
        errs = [os.path.join(tmp, f"worker-{i}.err") for i in range(workers)]
        procs = [
            subprocess.Popen([sys.executable, "-m", "mnist_search.worker", json.dumps(
                dataclasses.asdict(dataclasses.replace(base, index=i, error_file=errs[i])))],
                env=env)
            for i in range(workers)
        ]
        interrupted = False
        try:
            _follow(spec, url, target, procs, show_bar)
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


def _follow(spec: StudySpec, url: str, target: int, procs: list[subprocess.Popen],
            show_bar: bool) -> None:
    import optuna

    from .storage import make_storage
    from .study import counts

    study = optuna.load_study(study_name=spec.name, storage=make_storage(url))
    bar = _bar(spec.name, target) if show_bar else None
    last_done = -1
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(POLL_S)
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
