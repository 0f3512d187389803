"""A study's queue: what counts as finished, what a queued trial costs and which stack it
joins, the order trials are queued in, and claiming a worker's share under the study lock.

Claiming (fail stale trials, count, ask) happens under one lock shared by every process of
the study, so N workers finish exactly the requested number of trials and never pop the same
enqueued trial twice.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..config import CONFIG_FIELDS, TrainConfig, mlp_parameters
from ..spec import StudySpec
from .internals import trial_id
from .objective import DETERMINISTIC_FAILURES, study_seed, trial_seed
from .storage import study_lock

__all__ = ["SAMPLED_AT_ONCE", "Claim", "claim", "counts", "is_done", "queue_order",
           "queued_shape", "trial_cost"]

SAMPLED_AT_ONCE = 8  # trials asked of the sampler at once, so it keeps getting feedback
T = TypeVar("T")


def is_done(trial: FrozenTrial) -> bool:
    """Finished for counting purposes: COMPLETE, PRUNED, or FAILed by its own config."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and \
        trial.user_attrs.get("fail_reason") in DETERMINISTIC_FAILURES


def counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    return {
        "done": sum(is_done(t) for t in trials),
        "running": sum(t.state == TrialState.RUNNING for t in trials),
        "waiting": sum(t.state == TrialState.WAITING for t in trials),
        "failed": sum(t.state == TrialState.FAIL and not is_done(t) for t in trials),
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
    }


def _queued_values(spec: StudySpec, user_attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """Fixed values plus what a reference or grid point sets; None for a sampled trial."""
    label = user_attrs.get("label")
    ref = spec.reference(label) if label else None
    if ref is not None:
        values = dict(ref.values)
    elif user_attrs.get("grid_point"):
        values = spec.search.decode(json.loads(user_attrs["grid_point"]))
    else:
        return None
    return {**spec.fixed, **values}


def trial_cost(spec: StudySpec, user_attrs: Mapping[str, Any]) -> float:
    """Relative training cost of a (waiting) trial: parameters x epochs of its config.

    Reference trials are costed from their label, grid points from their values; anything
    else from the study's fixed values.
    """
    merged = _queued_values(spec, user_attrs) or dict(spec.fixed)
    config = TrainConfig(**{k: v for k, v in merged.items() if k in CONFIG_FIELDS})
    return float(mlp_parameters(config.hidden) * config.epochs)


def queued_shape(spec: StudySpec, user_attrs: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """The stack key (TrainConfig.stack_key) of a queued trial, from the file's values;
    None for a trial the sampler has yet to propose."""
    merged = _queued_values(spec, user_attrs)
    if merged is None:
        return None
    return TrainConfig(**{k: v for k, v in merged.items() if k in CONFIG_FIELDS}).stack_key()


def queue_order(spec: StudySpec, items: Sequence[tuple[Mapping[str, Any], T]]) -> list[
        tuple[Mapping[str, Any], T]]:
    """Trials of one shape together (they train as one stack), the costliest group first so
    the long work is not left for last, the file's order within a group. Workers claim
    from the front of the queue."""
    shapes = [queued_shape(spec, attrs) for attrs, _ in items]
    cost: dict[Any, float] = {}
    first: dict[Any, int] = {}
    for i, ((attrs, _), shape) in enumerate(zip(items, shapes, strict=True)):
        cost[shape] = cost.get(shape, 0.0) + trial_cost(spec, attrs)
        first.setdefault(shape, i)
    order = sorted(range(len(items)), key=lambda i: (-cost[shapes[i]], first[shapes[i]], i))
    return [items[i] for i in order]


@dataclass(frozen=True)
class Claim:
    """What a worker asks for: a study-wide target of finished trials, a fair share of it."""

    url: str  # the storage URL, for the study lock
    target: int  # finished trials the study should hold in total
    workers: int = 1  # how many workers share the study
    population: int = 1  # most trials claimed (and trained together) at once
    heartbeat: int = 0  # seconds between heartbeats; 0 = none


def claim(study: optuna.Study, storage: optuna.storages.RDBStorage, spec: StudySpec,
          request: Claim) -> list[optuna.Trial]:
    """Under the study lock: fail stale trials, then ask for this worker's share of work.

    A worker takes trials from the queue until it holds about 1/workers of the estimated
    remaining cost, so workers tend to finish together; but queued trials of one shape are
    taken whole (up to `population`), since they train together as one stack.
    """
    with study_lock(request.url, spec.name):
        if request.heartbeat:
            optuna.storages.fail_stale_trials(study)
        c = counts(study)
        free = request.target - c["done"] - c["running"]
        if free <= 0:
            return []
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))[:free]
        costs = [trial_cost(spec, t.user_attrs) for t in waiting]
        remaining = sum(costs) + max(0, free - len(costs)) * trial_cost(spec, {})
        share = remaining / max(1, min(request.workers, free))
        limit = min(request.population, SAMPLED_AT_ONCE,
                    math.ceil(free / max(1, request.workers)))
        shapes = [queued_shape(spec, t.user_attrs) for t in waiting]
        claimed: list[optuna.Trial] = []
        cost, seed_base = 0.0, study_seed(study, spec)
        while len(claimed) < min(free, request.population):
            i = len(claimed)  # ask() pops the oldest waiting trial: waiting[i], if any
            same = 0 < i < len(shapes) and shapes[i] is not None and shapes[i] == shapes[i - 1]
            if claimed and not same and (len(claimed) >= limit or cost >= share * 0.999):
                break
            trial = _ask(study, storage, seed_base, request.heartbeat)
            claimed.append(trial)
            cost += trial_cost(spec, trial.user_attrs)
        return claimed


def _ask(study: optuna.Study, storage: optuna.storages.RDBStorage, seed_base: int,
         heartbeat: int) -> optuna.Trial:
    trial = study.ask()
    # The seed is fixed the moment the trial exists, so even a trial whose worker dies
    # before training is retried with the seed it was meant to have.
    if "seed" not in trial.user_attrs:
        trial.set_user_attr("seed", trial_seed(seed_base, trial.number))
    trial.set_user_attr("heartbeat_s", heartbeat)
    if heartbeat:
        # A first beat now, not when the heartbeat thread gets round to it: a worker killed
        # in between would leave a RUNNING trial with no heartbeat, which Optuna never
        # counts as stale.
        storage.record_heartbeat(trial_id(trial))
    return trial
