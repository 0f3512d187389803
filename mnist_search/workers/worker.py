"""One worker process: claim trials, train them, tell the results; until the study is full.

Started by spawn.Pool as `python -m mnist_search.workers.launch --wait SOURCE DEVICE DATA`
(orders then come as one JSON line on stdin) or by hand as `python -m mnist_search.workers.launch
'<json>'`. Claiming happens under the study lock (search.queue.claim).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
import warnings
from typing import Any

import optuna

from ..errors import RedactingFilter
from ..search.queue import claim, waiting_on
from ..storage.faults import describe
from .context import WorkerOrders, open_worker
from .signals import (
    hold_stop_signals,
    install_stop_handlers,
    raise_if_stopped,
    release_stop_signals,
)
from .spawn import WARM_KEYS

__all__ = ["main", "work"]

log = logging.getLogger(__name__)

# How often a worker with nothing to claim looks again (it may take over a stale trial).
# It is also how late an idle worker notices that the last trials elsewhere finished, so
# it adds to every run's wall (measured 1.0-1.6 s at 2 s); one query of the trials each.
WAIT_POLL_S = 0.5

# (phase, time.monotonic()) of this worker's start-up, logged at debug level once logging
# is set up: where the seconds before the first training step go.
_PHASES: list[tuple[str, float]] = [("worker module loaded", time.monotonic())]


def phase(name: str) -> None:
    _PHASES.append((name, time.monotonic()))


def log_phases(started: float | None) -> None:
    """One debug line: each start-up phase's time since the command started (or since this
    process started, when the command's start is unknown)."""
    base = _PHASES[0][1] if started is None else started
    since = "the command started" if started is not None else "the worker started"
    log.debug("start-up (s since %s): %s", since,
              ", ".join(f"{name} {t - base:.2f}" for name, t in _PHASES))

def work(orders: WorkerOrders) -> int:
    import torch

    from ..training.train import resolve_device
    from .ledger import Ledger
    from .slots import Slots

    torch.set_num_threads(orders.threads)
    device = resolve_device(orders.device)
    mixed = device.startswith("cuda") if orders.mixed is None else orders.mixed
    orders = dataclasses.replace(orders, device=device, mixed=mixed)
    phase("torch and device ready")
    ctx = open_worker(orders)
    phase("storage and study opened")
    ledger = Ledger(ctx.storage)  # where this worker's time goes, logged as it ends
    ledger.time_sampler(ctx.study.sampler)
    ran, first = 0, True
    with Slots(ctx, orders.population, mixed) as slots:
        while True:
            raise_if_stopped()  # a stop that came while opening or telling: claim nothing
            if slots.free and not _past(orders.deadline):
                was_held = hold_stop_signals()
                try:
                    request = dataclasses.replace(orders.claim_request(ctx.seed_base),
                                                  population=slots.free)
                    start = time.perf_counter()
                    trials = claim(ctx.study, ctx.storage, ctx.spec, request)
                    # bench/bench_workers.py reads these lines (lock wait included)
                    log.debug("claimed %d trials in %.4f s", len(trials),
                              time.perf_counter() - start)
                    slots.join(trials)
                finally:
                    release_stop_signals(was_held)  # an interrupt held meanwhile lands here
                ran += len(trials)
                if trials and not len(slots):
                    continue  # every trial claimed ended at once (failed alone): claim again
            if len(slots):
                if first:
                    phase("first training epoch starts")
                    log_phases(orders.started)
                    first = False
                slots.run_epoch()  # tells the trials that end; their slots are free again
                continue
            # Nothing to train or claim. Trials still RUNNING (here, or in a worker that may
            # be dead) are waited for: they finish, or their heartbeat goes stale and the
            # next claim fails and re-queues them, for this worker to run.
            if _past(orders.deadline) or not orders.heartbeat or \
                    not waiting_on(ctx.study, orders.target):
                break
            _sleep(min(WAIT_POLL_S, orders.heartbeat), orders.deadline)
    log.debug("worker %d ran %d trials", orders.index, ran)
    log.debug("%s", ledger.line())  # bench/bench_search.py --shares reads it
    return 0


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.time() >= deadline


def _sleep(seconds: float, deadline: float | None) -> None:
    """Sleep, but stop at once for Ctrl-C/SIGTERM (the handler only records them)."""
    end = time.monotonic() + (seconds if deadline is None else
                              min(seconds, deadline - time.time()))
    while time.monotonic() < end:
        raise_if_stopped()
        time.sleep(min(0.05, max(0.0, end - time.monotonic())))
    raise_if_stopped()


def _orders(argv: list[str]) -> WorkerOrders | None:
    """The orders, from argv; or, for a worker started early by spawn.Pool (`--wait SOURCE
    DEVICE DATA`: where the study came from, for `ps`, and its data settings as JSON), from
    one line of stdin once it has warmed up. None: cancelled."""
    if argv[:1] != ["--wait"]:
        return WorkerOrders(**json.loads(argv[0]))
    _warm_up(argv[2], json.loads(argv[3]) if len(argv) > 3 else {})
    phase("warmed up, waiting for orders")
    line = sys.stdin.readline()
    phase("orders received")
    return WorkerOrders(**json.loads(line)) if line.strip() else None


def _warm_up(device: str, fixed: dict[str, Any]) -> None:
    """Import torch, load the study's data and its CPU pixel order, and import what opening
    the storage needs, while the parent still opens the study.

    Only a head start: load_data and PixelOrder cache what they compute, and anything that
    fails here fails again, properly reported, once the orders arrive.
    """
    try:
        import alembic.migration  # noqa: F401 - RDBStorage checks the schema version with it
        import alembic.script  # noqa: F401

        from ..config import TrainConfig
        from ..training.epochs import pixel_order
        from ..training.train import load_for, resolve_device
        from . import slots  # noqa: F401 - torch, optuna, sqlalchemy

        phase("imports")

        config = TrainConfig(**{k: fixed[k] for k in WARM_KEYS if k in fixed})
        resolved = resolve_device(device)
        phase("device")
        data = load_for(config, resolved)
        phase("data on the device")
        pixel_order(data, resolved, config.batch_size)
        phase("pixel order")
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

    argv = sys.argv[1:] if argv is None else argv
    try:
        orders = _orders(argv)
    except KeyboardInterrupt:  # Ctrl-C while the parent was still preparing
        return 130
    if orders is None:
        return 0
    install_stop_handlers()  # SIGTERM ends the trial like Ctrl-C; both wait while held
    logging.basicConfig(level=orders.log_level, stream=sys.stderr,
                        format=f"%(asctime)s worker {orders.index}: %(message)s",
                        datefmt="%H:%M:%S")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())  # no URL's password reaches the log
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

