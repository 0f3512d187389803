"""One worker process: claim trials, train them, tell the results; until the study is full.

Started by pool.Pool as `python -m mnist_search.workers.worker --wait SPEC DEVICE OVERRIDES`
(orders then come as one JSON line on stdin) or by hand as `python -m mnist_search.workers.worker
'<json>'`. Claiming happens under the study lock (search.queue.claim).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
import warnings
from typing import Any

import optuna

from ..search.queue import claim
from ..search.storage import describe
from ..spec import load_spec
from .context import WorkerOrders, open_worker
from .signals import hold_stop_signals, raise_interrupt, release_stop_signals

__all__ = ["main", "work"]

log = logging.getLogger(__name__)


def work(orders: WorkerOrders) -> int:
    import torch

    from ..training.train import resolve_device
    from .population import train_claimed

    torch.set_num_threads(orders.threads)
    orders = dataclasses.replace(orders, device=resolve_device(orders.device))
    ctx = open_worker(orders)
    request = orders.claim_request()
    ran = 0
    while orders.deadline is None or time.time() < orders.deadline:
        old_mask = hold_stop_signals()
        trials = claim(ctx.study, ctx.storage, ctx.spec, request)
        if not trials:
            release_stop_signals(old_mask)
            break
        train_claimed(ctx, trials, old_mask)
        release_stop_signals(old_mask)  # an interrupt held while telling lands here
        ran += len(trials)
    log.debug("worker %d ran %d trials", orders.index, ran)
    return 0


def _orders(argv: list[str]) -> WorkerOrders | None:
    """The orders, from argv; or, for a worker started early by pool.Pool (`--wait SPEC
    DEVICE OVERRIDES`), from one line of stdin once it has warmed up. None: cancelled."""
    if argv[:1] != ["--wait"]:
        return WorkerOrders(**json.loads(argv[0]))
    _warm_up(argv[1], argv[2], json.loads(argv[3]) if len(argv) > 3 else {})
    line = sys.stdin.readline()
    return WorkerOrders(**json.loads(line)) if line.strip() else None


def _warm_up(spec_path: str, device: str, overrides: dict[str, Any]) -> None:
    """Import torch and load the study's data while the parent still opens the study.

    Only a head start: load_data caches what it loads, and anything that fails here fails
    again, properly reported, once the orders arrive.
    """
    try:
        from ..config import TrainConfig
        from ..training.train import load_for, resolve_device
        from . import population  # noqa: F401 - torch, optuna, sqlalchemy

        fixed = load_spec(spec_path).with_fixed(**overrides).fixed
        keys = ("dataset", "val_size", "normalize")
        config = TrainConfig(**{k: fixed[k] for k in keys if k in fixed})
        load_for(config, resolve_device(device))
    except Exception as exc:  # noqa: BLE001 - see above
        log.debug("warm-up skipped: %s", exc)


def _quiet_optuna(level: int) -> None:
    # Heartbeats are experimental in Optuna and "supposed to be used with Study.optimize";
    # this worker records them itself around ask/tell (see signals.Heartbeat), so the
    # warnings would only be noise on every trial.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    optuna.logging.set_verbosity(optuna.logging.WARNING if level > logging.INFO
                                 else optuna.logging.INFO)


def main(argv: list[str] | None = None) -> int:
    import signal

    argv = sys.argv[1:] if argv is None else argv
    try:
        orders = _orders(argv)
    except KeyboardInterrupt:  # Ctrl-C while the parent was still preparing
        return 130
    if orders is None:
        return 0
    signal.signal(signal.SIGTERM, raise_interrupt)  # SIGTERM ends the trial like Ctrl-C
    logging.basicConfig(level=orders.log_level, stream=sys.stderr,
                        format=f"%(asctime)s worker {orders.index}: %(message)s",
                        datefmt="%H:%M:%S")
    _quiet_optuna(orders.log_level)
    try:
        return work(orders)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if orders.log_level <= logging.DEBUG:
            raise
        line = describe(exc, orders.url)
        if orders.error_file:
            with open(orders.error_file, "w") as fh:
                fh.write(line)
        else:
            print(f"mnist-search: worker {orders.index}: error: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    code = main()
    # Everything is told and committed by now; skip the interpreter's teardown of torch and
    # friends (about 0.7 s), as multiprocessing's children do.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
