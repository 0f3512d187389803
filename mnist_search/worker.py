"""One worker process: claim a trial, train it, tell the result; until the study is full.

Started by runner.Pool as `python -m mnist_search.worker` (orders as one JSON line on stdin)
or by hand as `python -m mnist_search.worker '<json>'`. Claiming (count,
fail stale trials, ask) happens under the study lock, so N workers finish exactly the
requested number of trials and never pop the same enqueued trial twice.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("mnist_search.worker")

DEFAULT_HEARTBEAT_S = 10
MAX_RETRY = 1  # a trial whose worker died is re-run once with the same params, label, seed


@dataclass(frozen=True)
class WorkerArgs:
    spec: str
    url: str
    target: int
    index: int = 0
    threads: int = 1
    device: str = "auto"
    deadline: float | None = None  # time.time() after which no new trial is started
    heartbeat: int = DEFAULT_HEARTBEAT_S  # seconds; grace is 3x (0 disables heartbeats)
    log_level: int = logging.INFO
    error_file: str | None = None  # where the one-line fatal error goes for the parent
    workers: int = 1  # how many workers share the study (for a fair share per claim)
    population: int = 1  # most trials claimed and trained together at once


class _Heartbeat:
    """Records the heartbeats of trials every `interval` seconds from a background thread."""

    def __init__(self, storage: Any, trial_ids: list[int], interval: int) -> None:
        self.storage, self.trial_ids, self.interval = storage, trial_ids, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while True:
            for trial_id in self.trial_ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as exc:  # a missed beat is not fatal; the next may land
                    log.warning("heartbeat for trial id %d failed: %s", trial_id, exc)
            if self.stop.wait(self.interval):
                return

    def __enter__(self) -> _Heartbeat:
        if self.interval:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()


def open_worker_study(args: WorkerArgs) -> tuple[Any, Any, Any]:
    import optuna

    from .spec import load_spec
    from .storage import make_storage
    from .study import make_pruner, make_sampler

    spec = load_spec(args.spec)
    hb = args.heartbeat or None
    storage = make_storage(
        args.url, heartbeat_interval=hb, grace_period=None if hb is None else 3 * hb,
        retry_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        if hb else None)
    n_existing = len(optuna.load_study(study_name=spec.name, storage=storage)
                     .get_trials(deepcopy=False))
    study = optuna.load_study(study_name=spec.name, storage=storage,
                              sampler=make_sampler(spec, args.index, n_existing),
                              pruner=make_pruner(spec))
    return spec, storage, study


SAMPLED_AT_ONCE = 8  # trials asked of the sampler at once, so it keeps getting feedback


def claim(study: Any, storage: Any, spec: Any, args: WorkerArgs) -> list[Any]:
    """Under the study lock: fail stale trials, then ask for this worker's share of work.

    A worker takes trials from the queue until it holds about 1/workers of the estimated
    remaining cost, so workers tend to finish together; but queued trials of one shape are
    taken whole (up to `population`), since they train together as one stack.
    """
    import math

    import optuna
    from optuna.trial import TrialState

    from .objective import trial_seed
    from .storage import study_lock
    from .study import counts, queued_shape, study_seed, trial_cost

    with study_lock(args.url, spec.name):
        if args.heartbeat:
            optuna.storages.fail_stale_trials(study)
        c = counts(study)
        free = args.target - c["done"] - c["running"]
        if free <= 0:
            return []
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))[:free]
        costs = [trial_cost(spec, t.user_attrs) for t in waiting]
        remaining = sum(costs) + max(0, free - len(costs)) * trial_cost(spec, {})
        share = remaining / max(1, min(args.workers, free))
        limit = min(args.population, SAMPLED_AT_ONCE, math.ceil(free / max(1, args.workers)))
        shapes = [queued_shape(spec, t.user_attrs) for t in waiting]
        claimed, cost = [], 0.0
        base_seed = study_seed(study, spec)
        while len(claimed) < min(free, args.population):
            i = len(claimed)  # ask() pops the oldest waiting trial: waiting[i], if any
            same = 0 < i < len(shapes) and shapes[i] is not None and shapes[i] == shapes[i - 1]
            if claimed and not same and (len(claimed) >= limit or cost >= share * 0.999):
                break
            trial = study.ask()
            # The seed is fixed the moment the trial exists, so even a trial whose worker
            # dies before training is retried with the seed it was meant to have.
            if "seed" not in trial.user_attrs:
                trial.set_user_attr("seed", trial_seed(base_seed, trial.number))
            trial.set_user_attr("heartbeat_s", args.heartbeat)
            if args.heartbeat:
                # A first beat now, not when the batch's heartbeat thread gets round to it:
                # a worker killed in between would leave a RUNNING trial with no heartbeat,
                # which Optuna never counts as stale.
                storage.record_heartbeat(trial._trial_id)
            claimed.append(trial)
            cost += trial_cost(spec, trial.user_attrs)
        return claimed


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _defer_signals() -> set:
    """Hold Ctrl-C/SIGTERM until _release: a trial is never left between ask and try."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)


def _release(old_mask: set) -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)  # a held signal is raised right here


def trial_note(trial: Any, config: Any) -> None:
    """A one-line dashboard note on the trial's page: what this run is, at a glance."""
    from optuna_dashboard import save_note

    label = trial.user_attrs.get("label")
    head = f"**{label}** · " if label else ""
    save_note(trial, f"{head}{config.architecture} · lr {config.lr} · momentum "
                     f"{config.momentum} · dropout {config.dropout} · l1 {config.l1} · "
                     f"l2 {config.l2} · seed {config.seed}")


def reporter_value(spec: Any, result: Any) -> float:
    from .objective import objective_value

    return objective_value(spec, result.test_accuracy, result.val_accuracy)


def work(args: WorkerArgs) -> int:
    import torch

    torch.set_num_threads(args.threads)
    from .train import resolve_device

    args = WorkerArgs(**{**args.__dict__, "device": resolve_device(args.device)})
    spec, storage, study = open_worker_study(args)
    from .batch import run_batch

    ran = 0
    while args.deadline is None or time.time() < args.deadline:
        old_mask = _defer_signals()
        trials = claim(study, storage, spec, args)
        if not trials:
            _release(old_mask)
            break
        run_batch(study, storage, trials, spec, args, old_mask)
        _release(old_mask)  # an interrupt held while telling lands here, between trials
        ran += len(trials)
    log.debug("worker %d ran %d trials", args.index, ran)
    return 0


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _orders(argv: list[str]) -> WorkerArgs | None:
    """The WorkerArgs, from argv; or, for a worker started early by runner.Pool
    (`--wait SPEC DEVICE`), from one line of stdin once it has warmed up. None: cancelled."""
    if argv[:1] != ["--wait"]:
        return WorkerArgs(**json.loads(argv[0]))
    _warm_up(*argv[1:3])
    line = sys.stdin.readline()
    return WorkerArgs(**json.loads(line)) if line.strip() else None


def _warm_up(spec_path: str, device: str) -> None:
    """Import torch and load the study's data while the parent still opens the study.

    Only a head start: load_data caches what it loads, and anything that fails here fails
    again, properly reported, once the orders arrive.
    """
    try:
        from . import batch, storage  # noqa: F401 - torch, optuna, sqlalchemy
        from .config import TrainConfig
        from .spec import load_spec
        from .train import load_for, resolve_device

        fixed = load_spec(spec_path).fixed
        keys = ("dataset", "val_size", "normalize")
        config = TrainConfig(**{k: fixed[k] for k in keys if k in fixed})
        load_for(config, resolve_device(device))
    except Exception as exc:  # noqa: BLE001 - see above
        log.debug("warm-up skipped: %s", exc)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = _orders(argv)
    except KeyboardInterrupt:  # Ctrl-C while the parent was still preparing
        return 130
    if args is None:
        return 0
    signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM ends the trial like Ctrl-C
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format=f"%(asctime)s worker {args.index}: %(message)s",
                        datefmt="%H:%M:%S")
    import warnings

    import optuna

    # Heartbeats are experimental in Optuna and "supposed to be used with Study.optimize";
    # this worker records them itself around ask/tell (see _Heartbeat), so the warnings
    # would only be noise on every trial.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    optuna.logging.set_verbosity(optuna.logging.WARNING if args.log_level > logging.INFO
                                 else optuna.logging.INFO)
    try:
        return work(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from .storage import describe

        if args.log_level <= logging.DEBUG:
            raise
        line = describe(exc, args.url)
        if args.error_file:
            with open(args.error_file, "w") as fh:
                fh.write(line)
        else:
            print(f"mnist-search: worker {args.index}: error: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    code = main()
    # Everything is told and committed by now; skip the interpreter's teardown of torch and
    # friends (about 0.7 s), as multiprocessing's children do.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
