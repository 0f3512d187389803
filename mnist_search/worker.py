"""One worker process: claim a trial, train it, tell the result; until the study is full.

Started by runner.run_workers as `python -m mnist_search.worker '<json>'`. Claiming (count,
fail stale trials, ask) happens under the study lock, so N workers finish exactly the
requested number of trials and never pop the same enqueued trial twice.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
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


class _Heartbeat:
    """Records a trial's heartbeat every `interval` seconds from a background thread."""

    def __init__(self, storage: Any, trial_id: int, interval: int) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while True:
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as exc:  # a missed beat is not fatal; the next one may land
                log.warning("heartbeat for trial id %d failed: %s", self.trial_id, exc)
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


def claim(study: Any, spec: Any, args: WorkerArgs) -> Any | None:
    """Under the study lock: fail stale trials, stop if the study is full, else ask."""
    import optuna

    from .storage import study_lock
    from .study import counts

    with study_lock(args.url, spec.name):
        if args.heartbeat:
            optuna.storages.fail_stale_trials(study)
        c = counts(study)
        if c["done"] + c["running"] >= args.target:
            return None
        return study.ask()


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _defer_signals() -> set:
    """Hold Ctrl-C/SIGTERM until _release: a trial is never left between ask and try."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)


def _release(old_mask: set) -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)  # a held signal is raised right here


def run_one(study: Any, storage: Any, trial: Any, spec: Any, args: WorkerArgs,
            old_mask: set) -> None:
    """Train one claimed trial and tell its outcome; re-raises Ctrl-C after telling FAIL.

    Called with stop signals held (see work); they are released inside the try, so an
    interrupt at any point ends the trial FAIL instead of leaving it RUNNING.
    """
    from optuna.trial import TrialState

    from .objective import EpochReporter, config_for_trial, record_partial, record_result
    from .train import NonFiniteLossError, StopTraining, load_for, train

    reporter = EpochReporter(trial, spec)
    with _Heartbeat(storage, trial._trial_id, args.heartbeat):
        try:
            _release(old_mask)
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
            trial.set_user_attr("heartbeat_s", args.heartbeat)
            config = config_for_trial(trial, spec, args.device)
            trial_note(trial, config)
            result = train(config, load_for(config, config.device), on_epoch=reporter)
            _defer_signals()  # recording and telling a finished trial is not interrupted
        except StopTraining:
            record_partial(trial, reporter.history, "pruned")
            study.tell(trial, state=TrialState.PRUNED)
            return
        except NonFiniteLossError as exc:
            record_partial(trial, reporter.history, "nonfinite")
            trial.set_user_attr("fail_message", str(exc))
            study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d failed: %s", trial.number, exc)
            return
        except BaseException as exc:
            # Ctrl-C, SIGTERM or a bug: the trial must not stay RUNNING.
            _defer_signals()
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
            record_partial(trial, reporter.history, reason)
            trial.set_user_attr("fail_message", f"{type(exc).__name__}: {exc}"[:500])
            study.tell(trial, state=TrialState.FAIL)
            raise
        record_result(trial, result)
        study.tell(trial, reporter_value(spec, result))


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
    ran = 0
    while args.deadline is None or time.time() < args.deadline:
        old_mask = _defer_signals()
        trial = claim(study, spec, args)
        if trial is None:
            _release(old_mask)
            break
        run_one(study, storage, trial, spec, args, old_mask)
        _release(old_mask)  # an interrupt held while telling lands here, between trials
        ran += 1
    log.debug("worker %d ran %d trials", args.index, ran)
    return 0


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = WorkerArgs(**json.loads(argv[0]))
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
    sys.exit(main())
