"""Fail trials left RUNNING by dead workers, without waiting for a worker to do it.

Optuna fails stale trials only when some worker asks for its next trial; after the last
worker died nothing would. `reap` does it on demand and re-enqueues labelled (reference or
grid) trials, so the study still completes every label exactly once.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..storage.connect import make_storage
from ..storage.internals import (
    backend_of,
    stale_trial_ids,
    storage_of,
    trial_id,
    trials_with_heartbeat,
)
from ..storage.lock import study_lock
from ..storage.rows import record_fail_reason
from .queue import IDENTITY_KEYS, identity, is_done

__all__ = ["StaleTrialCallback", "reap"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReapReport:
    failed: tuple[int, ...]  # trial numbers set to FAIL
    requeued: tuple[str, ...]  # labels / grid points enqueued again
    left_running: tuple[int, ...]  # RUNNING trials that are not stale


class StaleTrialCallback:
    """What a run does with a trial Optuna's stale check has failed: records why
    (fail_reason "stale", as `reap` does; the retrying storage marked it already, this
    covers any other RDB storage), then runs it again with its params, label and seed, as
    Optuna's RetryHeartbeatStaleTrialCallback does (at most `max_retry` times).

    `max_retry` counts the deaths a run sees happen: it stops a trial that kills its worker
    (a config the kernel's OOM killer takes) from being re-run for ever. A trial started
    before `since` (the run's start) died in an earlier run: a resumed run takes it over
    as open_study's enqueue_pending takes over a label that had already failed, whatever
    its history. Otherwise a label killed once in each of two runs, the second death found
    by the next run's stale check rather than at its start, would be left unrun."""

    def __init__(self, max_retry: int, since: dt.datetime | None = None) -> None:
        self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self.resume = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)
        self.since = since

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        backend = backend_of(storage_of(study))
        if backend is not None:
            record_fail_reason(backend, trial_id(trial), "stale")
        again = copy.deepcopy(trial)  # the re-run is not a failed trial: no fail_reason
        again.user_attrs.pop("fail_reason", None)
        earlier = self.since is not None and trial.datetime_start is not None and \
            trial.datetime_start < self.since
        (self.resume if earlier else self.retry)(study, again)


def _stale(trial: FrozenTrial, stale_ids: set[int], beating: set[int],
           older_than: float | None) -> bool:
    if trial_id(trial) in stale_ids:
        return True
    if trial_id(trial) in beating:
        return False  # a heartbeat newer than the grace: a live worker
    if older_than is None or trial.datetime_start is None:
        return False  # no heartbeat and no age given: cannot tell a dead worker from a slow one
    return (dt.datetime.now() - trial.datetime_start).total_seconds() > older_than


def reap(study_name: str, url: str, older_than: float | None = None) -> ReapReport:
    """Fail stale RUNNING trials of a study and re-enqueue their labels."""
    probe = optuna.load_study(study_name=study_name, storage=make_storage(url, create=False))
    running = probe.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    beats = [int(t.user_attrs.get("heartbeat_s") or 0) for t in running]
    grace = int(older_than) if older_than is not None else 3 * (max(beats, default=0) or 10)
    storage = make_storage(url, heartbeat_interval=max(1, min(beats + [grace])),
                           grace_period=max(1, grace), create=False)
    study = optuna.load_study(study_name=study_name, storage=storage)
    # under the lock a run's workers claim under (and fail stale trials and enqueue their
    # re-runs): so a label is never enqueued again by both, nor by two reaps at once
    with study_lock(url, study_name):
        stale_ids = stale_trial_ids(storage, study)
        beating = trials_with_heartbeat(storage)
        failed, left = [], []
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if not _stale(t, stale_ids, beating, older_than):
                left.append(t.number)
                continue
            storage.set_trial_user_attr(trial_id(t), "fail_reason", "stale")
            storage.set_trial_state_values(trial_id(t), TrialState.FAIL)
            failed.append(t.number)
            log.info("trial %d: RUNNING with a stale heartbeat -> FAIL", t.number)
        return ReapReport(tuple(failed), tuple(requeue_missing(study)), tuple(left))


def requeue_missing(study: optuna.Study) -> list[str]:
    """Enqueue again every label/grid point whose only trials FAILed for an outside reason.

    Uses the failed trial's own params, label and seed, so the re-run is the same run.
    """
    trials = study.get_trials(deepcopy=False)
    live = {identity(t) for t in trials
            if t.state in (TrialState.RUNNING, TrialState.WAITING) or is_done(t)}
    added: list[str] = []
    for t in trials:
        ident = identity(t)
        if t.state != TrialState.FAIL or ident is None or ident in live or ident in added:
            continue
        attrs = {k: t.user_attrs[k] for k in (*IDENTITY_KEYS, "group", "seed", "order_seed",
                                              "replicate") if k in t.user_attrs}
        study.enqueue_trial(t.params, user_attrs={**attrs, "retry_of": t.number})
        added.append(ident)
    return added
