"""A study's queue: what counts as finished, what a queued trial costs and which stack it
joins, the order trials are queued in, and claiming a worker's share under the study lock.

Claiming (fail stale trials, count, ask) happens under one lock shared by every process of
the study, so N workers finish exactly the requested number of trials and never pop the same
enqueued trial twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..config import CONFIG_FIELDS, STACK_FIELDS, TrainConfig, mlp_parameters
from ..spec import StudySpec
from ..storage.internals import live_trials, state_reasons, waiting_trials
from ..storage.lock import study_lock
from .lifecycle import DETERMINISTIC_FAILURES, ask_trial, create_trials, study_seed

__all__ = ["IDENTITY_KEYS", "SAMPLED_AT_ONCE", "Claim", "claim", "counts", "fail_stale",
           "identity", "identity_of", "is_done", "just_recovered", "queue_order", "queued_shape",
           "tally", "tally_states", "trial_cost", "unfinished_identities", "waiting_on"]

SAMPLED_AT_ONCE = 8  # trials asked of the sampler at once, so it keeps getting feedback
log = logging.getLogger(__name__)

T = TypeVar("T")


def is_done(trial: FrozenTrial) -> bool:
    """Finished for counting purposes: COMPLETE, PRUNED, or FAILed by its own config."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and \
        trial.user_attrs.get("fail_reason") in DETERMINISTIC_FAILURES


def counts(study: optuna.Study) -> dict[str, int]:
    return tally(study.get_trials(deepcopy=False))


def tally(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    """counts() of these trials."""
    by_state: dict[tuple[TrialState, str | None], int] = {}
    for t in trials:
        reason = t.user_attrs.get("fail_reason") if t.state == TrialState.FAIL else None
        key = (t.state, reason if isinstance(reason, str) else None)
        by_state[key] = by_state.get(key, 0) + 1
    return tally_states(by_state)


def tally_states(by_state: Mapping[tuple[TrialState, str | None], int]) -> dict[str, int]:
    """counts() from how many trials are in each state, FAIL ones by fail_reason
    (internals.state_reasons): is_done's verdict without reading the trials."""
    def total(*states: TrialState, reasons: bool | None = None) -> int:
        return sum(n for (state, reason), n in by_state.items() if state in states and
                   (reasons is None or (reason in DETERMINISTIC_FAILURES) == reasons))

    done, fail = (TrialState.COMPLETE, TrialState.PRUNED), TrialState.FAIL
    return {
        "done": total(*done) + total(fail, reasons=True),
        "running": total(TrialState.RUNNING),
        "waiting": total(TrialState.WAITING),
        "failed": total(fail, reasons=False),  # to be re-run (a dead worker's, say)
        "failed_alone": total(fail, reasons=True),  # done: the config itself cannot train
        "complete": total(TrialState.COMPLETE),
    }


IDENTITY_KEYS = ("label", "grid_point")  # what makes a queued trial one to run exactly once


def identity(trial: FrozenTrial) -> str | None:
    """'label=baseline' or 'grid_point={...}' for a labelled trial; None for a sampled one."""
    return identity_of(trial.user_attrs)


def identity_of(user_attrs: Mapping[str, Any]) -> str | None:
    """identity() of a trial with these user attrs: a grid point's replicate r > 1 is
    'grid_point={...}#r' (a label's replicate is in its label, 'baseline#2')."""
    for key in IDENTITY_KEYS:
        if user_attrs.get(key) is not None:
            rep = user_attrs.get("replicate")
            mark = f"#{rep}" if key == "grid_point" and isinstance(rep, int) and rep > 1 else ""
            return f"{key}={user_attrs[key]}{mark}"
    return None


def unfinished_identities(trials: Sequence[FrozenTrial]) -> tuple[list[str], list[str]]:
    """(labels whose trials all failed for an outside reason and none is queued again,
    labels finished more than once): both break "every label runs exactly once"."""
    live: set[str] = set()
    finished: dict[str, int] = {}
    failed: list[str] = []
    for t in trials:
        ident = identity(t)
        if ident is None:
            continue
        if is_done(t):
            finished[ident] = finished.get(ident, 0) + 1
        elif t.state in (TrialState.RUNNING, TrialState.WAITING):
            live.add(ident)
        elif ident not in failed:
            failed.append(ident)
    dropped = [i for i in failed if i not in live and i not in finished]
    return dropped, [i for i, n in finished.items() if n > 1]


def waiting_on(study: optuna.Study, target: int) -> list[FrozenTrial]:
    """RUNNING trials a run short of its target waits for instead of stopping: those with
    heartbeats, which either finish or go stale and are then failed and re-run by the next
    claim. Trials run without heartbeats cannot be told from slow ones: never waited for."""
    trials = study.get_trials(deepcopy=False)
    if sum(is_done(t) for t in trials) >= target:
        return []
    return [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("heartbeat_s")]


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
    mixed: bool = False  # the worker trains trials of other shapes side by side
    # Most sampled trials asked at once (None: SAMPLED_AT_ONCE, or every free slot for a
    # worker that mixes shapes, whose engine is as wide as its slots).
    proposals: int | None = None
    seed: int | None = None  # the study's seed, if the caller has read it (else read here)


def claim(study: optuna.Study, storage: optuna.storages.RDBStorage, spec: StudySpec,
          request: Claim) -> list[optuna.Trial]:
    """Under the study lock: fail stale trials, then ask for this worker's share of work.

    A worker takes trials from the queue until it holds about 1/workers of the estimated
    remaining cost, so workers tend to finish together. Queued trials of one shape train
    together as one stack: a GPU worker (`mixed`) or a lone one takes them whole (up to
    `population`); CPU workers split such a group at the share, so that none idles while
    another trains a large stack. Sampled
    trials are claimed several at once only when the search cannot change their shape (they
    stack) or the worker mixes shapes (`mixed`, it trains them side by side); otherwise one
    at a time, so the sampler sees each result before it proposes the
    next, and a time budget never strands a worker with a queue of untrained claims.
    """
    with study_lock(request.url, spec.name), _heartbeats_as_meant():
        start = time.perf_counter()
        try:
            made = _claim_locked(study, storage, spec, request)
        finally:  # bench/bench_workers.py reads these lines: how long claims hold the lock
            log.debug("held the study lock %.4f s", time.perf_counter() - start)
        # a new trial becomes a live Trial (a read, the sampler's before_trial) once the
        # lock is released: the other workers' claims need not wait for that
    return live_trials(study, made)


def _claim_locked(study: optuna.Study, storage: optuna.storages.RDBStorage, spec: StudySpec,
                  request: Claim) -> list[optuna.Trial | int]:
    """The claim's trials: popped ones as live Trials, new ones by id (see claim)."""
    fail_stale(study, storage, request.heartbeat)
    c = tally_states(state_reasons(study))  # a count, not a read of every unfinished trial
    # a sampled config stands for `replicates` trials: its other seeds are queued when it
    # starts (lifecycle.replicate_sampled), so it takes that many of the free places, and
    # one claimed by another worker that has not started yet holds the places of its own
    reps = spec.replicates if spec.search and spec.sampler_kind != "grid" else 1
    pending = _pending_replicates(study, reps) if reps > 1 and c["running"] else 0
    free = request.target - c["done"] - c["running"] - pending
    if free <= 0:
        return []
    queued = waiting_trials(study) if c["waiting"] else []  # in the order ask pops
    waiting = queued[:free]
    costs = [trial_cost(spec, t.user_attrs) for t in waiting]
    remaining = sum(costs) + max(0, free - len(costs)) * trial_cost(spec, {})
    share = remaining / max(1, min(request.workers, free))
    asks = request.proposals or (request.population if request.mixed else SAMPLED_AT_ONCE)
    limit = min(request.population, asks, math.ceil(free / max(1, request.workers)))
    shapes = [queued_shape(spec, t.user_attrs) for t in waiting]
    claimed: list[optuna.Trial | None] = []  # None: a new trial, created after the loop
    cost = 0.0
    seed_base = study_seed(study, spec) if request.seed is None else request.seed
    samples_stack = not spec.search.fields & set(STACK_FIELDS)
    # Several CPU workers split a same-shape group at the share (stacking gains little
    # there, an idle worker loses its whole share); a GPU worker takes it whole.
    split = request.workers > 1 and not request.mixed
    used = 0
    while len(claimed) < request.population and used < free:
        i = len(claimed)  # ask() pops the oldest waiting trial: waiting[i], if any
        same = 0 < i < len(shapes) and shapes[i] is not None and shapes[i] == shapes[i - 1]
        full = cost >= share * 0.999
        if claimed and (full if same and split else
                        not same and (len(claimed) >= limit or full)):
            break
        if claimed and i >= len(waiting) and not (samples_stack or request.mixed):
            break  # a sampled trial of its own shape: one per claim
        queued_one = i < len(queued)
        if not queued_one and used + reps > free and (claimed or c["running"]):
            break  # too few places for a whole config, while others may still fill them
        made = ask_trial(study, storage, seed_base, request.heartbeat) if queued_one else None
        claimed.append(made)
        used += 1 if queued_one else reps
        cost += trial_cost(spec, made.user_attrs if made is not None else {})
    return _with_new_trials(study, storage, seed_base, request.heartbeat, claimed)


def _pending_replicates(study: optuna.Study, reps: int) -> int:
    """The seeds still to be queued for sampled configs claimed but not yet started."""
    trials = study.get_trials(deepcopy=False)
    queued: dict[int, int] = {}
    for t in trials:
        if "replicate_of" in t.user_attrs:
            queued[t.user_attrs["replicate_of"]] = queued.get(t.user_attrs["replicate_of"], 0) + 1
    return sum(max(0, reps - 1 - queued.get(t.number, 0)) for t in trials
               if t.state == TrialState.RUNNING and not any(
                   k in t.user_attrs for k in ("label", "grid_point", "replicate_of",
                                               "retry_of")))


def _with_new_trials(study: optuna.Study, storage: optuna.storages.RDBStorage, seed_base: int,
                     heartbeat: int, claimed: list[optuna.Trial | None]
                     ) -> list[optuna.Trial | int]:
    """The claim with its new trials (the Nones, past every popped one) created, in one
    transaction where the storage can: past the trials queued when the claim began, a new
    trial needs no search of the queue, since all that enqueues (open_study, a warm start,
    the stale check's re-runs, `reap`) holds the study lock."""
    popped: list[optuna.Trial | int] = [t for t in claimed if t is not None]
    n = len(claimed) - len(popped)
    if not n:
        return popped
    made = create_trials(study, storage, seed_base, heartbeat, n)
    if made is None:
        return [*popped, *(ask_trial(study, storage, seed_base, heartbeat, queued=False)
                           for _ in range(n))]
    return [*popped, *made]


@contextlib.contextmanager
def _heartbeats_as_meant() -> Iterator[None]:
    """Optuna warns that heartbeats are experimental and "supposed to be used with
    Study.optimize"; claims record them around ask/tell on purpose (workers.signals)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield


# A claim's stale check. Optuna's `fail_stale_trials` fails trials whose worker stopped beating
# (and its callback, reap.StaleTrialCallback, queues their re-runs); claims call it under the
# study lock, as Optuna's own loop does before each ask, except right after a storage outage,
# when nobody's beats could be recorded (just_recovered).
#
# Every claim looks. Looking at most once per heartbeat interval while a claim had slots to
# fill was tried and taken out: it did not speed the bookkeeping bench beyond its noise
# (against Optuna's 4 processes on PostgreSQL, 1.30x with it and 1.27x without; another run
# 1.04x and 1.05x), while it let a dead worker's trials wait longer for their re-runs, and a
# chaos run with it (tests/test_postgres.py) ended with three labels whose last trials had
# died past their one retry.


def just_recovered(storage: optuna.storages.RDBStorage) -> bool:
    """Whether this process's storage came back from an outage less than a grace period
    ago: every worker's heartbeats went unrecorded meanwhile, so trials that look stale may
    be alive; failing them waits until their workers have had time to beat again."""
    ended = getattr(storage, "outage_ended", 0.0)
    grace = storage.grace_period or 2 * (storage.heartbeat_interval or 0)  # Optuna's default
    return bool(ended) and time.monotonic() - ended < grace


def fail_stale(study: optuna.Study, storage: optuna.storages.RDBStorage, heartbeat: int
               ) -> None:
    """Fail the study's stale trials (and so queue their re-runs), unless heartbeats are off
    or the storage has just come back from an outage."""
    if heartbeat and not just_recovered(storage):
        optuna.storages.fail_stale_trials(study)
