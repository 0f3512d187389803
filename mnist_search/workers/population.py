"""Train a worker's claimed trials: grouped by shape, each group as one stacked population.

Trials that share an architecture (and batch size, epochs, data) train together through
train_population with one shared batch order (recorded as order_seed, so any of them can be
re-run alone exactly); each still has its own init, dropout masks, lr, momentum and penalty.
Per-epoch values go to each trial's own reporter, so pruning drops just that member. Every
trial is started, reported and settled by the same code as search.Objective.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from ..config import TrainConfig, mlp_parameters
from ..search.internals import trial_id
from ..search.objective import EpochReporter, record_partial, settle, start_trial, study_seed
from ..training.train import EpochReport, OutOfTime, TrainResult, load_for, train_population
from .context import WorkerContext
from .signals import Heartbeat, Mask, hold_stop_signals, raise_if_stopped, release_stop_signals

__all__ = ["groups_of", "train_claimed"]

log = logging.getLogger(__name__)


def groups_of(configs: list[TrainConfig]) -> list[list[int]]:
    """Indices grouped by stack key, the costliest group first."""
    by_key: dict[tuple[Any, ...], list[int]] = {}
    for i, c in enumerate(configs):
        by_key.setdefault(c.stack_key(), []).append(i)
    cost = {k: sum(configs[i].epochs for i in v) * mlp_parameters(configs[v[0]].hidden)
            for k, v in by_key.items()}
    return [by_key[k] for k in sorted(by_key, key=lambda k: -cost[k])]


def _tell(ctx: WorkerContext, trial: optuna.Trial, outcome: TrainResult | BaseException,
          reporter: EpochReporter) -> None:
    settled = settle(trial, reporter.spec, outcome, reporter.history, ctx.saver)
    study = ctx.study
    if settled.state == TrialState.COMPLETE:
        study.tell(trial, list(settled.values or ()))
    else:
        study.tell(trial, state=settled.state)


def _fail_all(study: optuna.Study, pending: list[optuna.Trial],
              reporters: dict[int, EpochReporter], exc: BaseException) -> None:
    reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
    for trial in pending:
        try:
            record_partial(trial, reporters[trial.number].history, reason)
            trial.set_user_attr("fail_message", f"{type(exc).__name__}: {exc}"[:500])
            study.tell(trial, state=TrialState.FAIL)
        except Exception as tell_exc:  # report the original error, not this one
            log.warning("could not mark trial %d FAIL: %s", trial.number, tell_exc)


def _share_order(trials: list[optuna.Trial], configs: list[TrainConfig],
                 group: list[int]) -> None:
    """Members of a stack share the first member's batch order, recorded for re-runs."""
    if len(group) < 2:
        return
    leader = configs[group[0]].seed
    for i in group:
        configs[i] = dataclasses.replace(configs[i], order_seed=leader)
        trials[i].set_user_attr("config", configs[i].to_dict())


def _train_group(ctx: WorkerContext, members: list[optuna.Trial], configs: list[TrainConfig],
                 reporters: dict[int, EpochReporter]) -> list[TrainResult | BaseException]:
    """One stack; none at all once the time budget is spent (the rest of a claim would
    otherwise each train an epoch past it)."""
    deadline = ctx.orders.deadline
    if deadline is not None and time.time() >= deadline:
        return [OutOfTime(0) for _ in members]

    def on_epoch(pos: int, rep: EpochReport) -> None:
        reporters[members[pos].number](rep)

    return train_population(configs, load_for(configs[0], configs[0].device), on_epoch,
                            deadline=deadline, between_batches=raise_if_stopped)


def train_claimed(ctx: WorkerContext, trials: list[optuna.Trial],
                  old_mask: Mask) -> None:
    """Train and tell every claimed trial; on Ctrl-C or an error, tell FAIL and re-raise.

    Called with stop signals held; they are released inside the try, so an interrupt at
    any point ends the unfinished trials FAIL instead of leaving them RUNNING.
    """
    spec, study = ctx.spec, ctx.study
    reporters = {t.number: EpochReporter(t, spec) for t in trials}
    pending = list(trials)
    with Heartbeat(ctx.storage, [trial_id(t) for t in trials], ctx.orders.heartbeat):
        try:
            release_stop_signals(old_mask)
            seed_base = study_seed(study, spec)
            configs = [start_trial(t, spec, ctx.orders.device, seed_base) for t in trials]
            for group in groups_of(configs):
                _share_order(trials, configs, group)
                members = [trials[i] for i in group]
                for t in members:  # the stack, in order: what `rerun` trains again
                    t.set_user_attr("population_size", len(group))
                    t.set_user_attr("stack", [m.number for m in members])
                outcomes = _train_group(ctx, members, [configs[i] for i in group], reporters)
                hold_stop_signals()  # telling finished trials is not interrupted
                for t, outcome in zip(members, outcomes, strict=True):
                    _tell(ctx, t, outcome, reporters[t.number])
                    pending.remove(t)
                release_stop_signals(old_mask)
        except BaseException as exc:
            hold_stop_signals()
            _fail_all(study, pending, reporters, exc)
            raise
