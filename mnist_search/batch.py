"""Train a worker's claimed trials: grouped by shape, each group as one stacked population.

Trials that share an architecture (and batch size, epochs, data) train together through
train_population with one shared batch order (recorded as order_seed, so any of them can be
re-run alone exactly); each still has its own init, dropout masks, lr, momentum and penalty.
Per-epoch values go to each trial's own reporter, so pruning drops just that member.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from typing import Any

from optuna.trial import TrialState

from .config import mlp_parameters
from .objective import EpochReporter, config_for_trial, record_partial, record_result
from .train import NonFiniteLossError, StopTraining, TrainResult, load_for, shape_key
from .worker import WorkerArgs, _defer_signals, _Heartbeat, _release, reporter_value, trial_note

log = logging.getLogger("mnist_search.worker")


def groups_of(configs: list[Any]) -> list[list[int]]:
    """Indices grouped by shape_key, the costliest group first."""
    by_key: dict[tuple, list[int]] = {}
    for i, c in enumerate(configs):
        by_key.setdefault(shape_key(c), []).append(i)
    cost = {k: sum(configs[i].epochs for i in v) * mlp_parameters(configs[v[0]].hidden)
            for k, v in by_key.items()}
    return [by_key[k] for k in sorted(by_key, key=lambda k: -cost[k])]


def _tell(study: Any, trial: Any, spec: Any, outcome: Any, reporter: EpochReporter) -> None:
    if isinstance(outcome, TrainResult):
        record_result(trial, outcome)
        study.tell(trial, reporter_value(spec, outcome))
    elif isinstance(outcome, StopTraining):
        record_partial(trial, reporter.history, "pruned")
        study.tell(trial, state=TrialState.PRUNED)
    elif isinstance(outcome, NonFiniteLossError):
        record_partial(trial, reporter.history, "nonfinite")
        trial.set_user_attr("fail_message", str(outcome))
        study.tell(trial, state=TrialState.FAIL)
        log.warning("trial %d failed: %s", trial.number, outcome)
    else:
        raise outcome


def _fail_all(study: Any, pending: list[Any], reporters: dict[int, EpochReporter],
              exc: BaseException) -> None:
    reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
    for trial in pending:
        try:
            record_partial(trial, reporters[trial.number].history, reason)
            trial.set_user_attr("fail_message", f"{type(exc).__name__}: {exc}"[:500])
            study.tell(trial, state=TrialState.FAIL)
        except Exception as tell_exc:  # report the original error, not this one
            log.warning("could not mark trial %d FAIL: %s", trial.number, tell_exc)


def run_batch(study: Any, storage: Any, trials: list[Any], spec: Any, args: WorkerArgs,
              old_mask: set) -> None:
    """Train and tell every claimed trial; on Ctrl-C or an error, tell FAIL and re-raise.

    Called with stop signals held; they are released inside the try, so an interrupt at
    any point ends the unfinished trials FAIL instead of leaving them RUNNING.
    """
    from .train import train_population

    reporters = {t.number: EpochReporter(t, spec) for t in trials}
    pending = list(trials)
    with _Heartbeat(storage, [t._trial_id for t in trials], args.heartbeat):
        try:
            _release(old_mask)
            configs = []
            for t in trials:
                t.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
                configs.append(config_for_trial(t, spec, args.device))
            for group in groups_of(configs):
                members = [trials[i] for i in group]
                if len(group) > 1:  # one shared batch order, recorded for exact re-runs
                    leader = configs[group[0]].seed
                    for i in group:
                        configs[i] = dataclasses.replace(configs[i], order_seed=leader)
                        trials[i].set_user_attr("config", configs[i].to_dict())
                for i, t in zip(group, members, strict=True):
                    trial_note(t, configs[i])
                    t.set_user_attr("population_size", len(group))
                cfgs = [configs[i] for i in group]
                outcomes = train_population(
                    cfgs, load_for(cfgs[0], cfgs[0].device),
                    on_epoch=lambda pos, rep, m=members: reporters[m[pos].number](rep))
                _defer_signals()  # telling finished trials is not interrupted
                for t, outcome in zip(members, outcomes, strict=True):
                    _tell(study, t, spec, outcome, reporters[t.number])
                    pending.remove(t)
                _release(old_mask)
        except BaseException as exc:
            _defer_signals()
            _fail_all(study, pending, reporters, exc)
            raise
