"""The few places this package reaches into Optuna's private API, and why, in one module.

Optuna 5 offers no public way to ask which RUNNING trials have a stale heartbeat without
failing them (`fail_stale_trials` does both, and only for a study with a live sampler), nor
which trials have a heartbeat record at all; `reap` needs both to tell a dead worker from a
live one. Trial and study ids (as opposed to numbers) are what the storage methods take, and
a loaded study does not say which storage it came from (confirm puts a study beside it).
tests/test_optuna_internals.py fails loudly if a new Optuna changes any of this; pyproject
caps optuna below 6 for the same reason.
"""

from __future__ import annotations

import optuna
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial

__all__ = ["retried_from", "stale_trial_ids", "storage_of", "study_id", "trial_id",
           "trials_with_heartbeat"]


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (its `number` counts within the study only)."""
    return int(trial._trial_id)


def study_id(study: optuna.Study) -> int:
    return int(study._study_id)


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a loaded study reads and writes (a study beside it goes there too)."""
    storage: optuna.storages.BaseStorage = study._storage
    return storage


def stale_trial_ids(storage: RDBStorage, study: optuna.Study) -> set[int]:
    """RUNNING trials whose last heartbeat is older than the storage's grace period."""
    return set(storage._get_stale_trial_ids(study_id(study)))


def retried_from(storage: RDBStorage, trial: optuna.Trial) -> int | None:
    """The number of the stale trial this one re-runs (RetryHeartbeatStaleTrialCallback
    records it in system attrs, which an optuna.Trial no longer exposes), or None."""
    # system attrs alone: a claim asks this of every trial, and a whole trial is 6 queries
    failed = storage.get_trial_system_attrs(trial_id(trial)).get("failed_trial")
    return None if failed is None else int(failed)


def trials_with_heartbeat(storage: RDBStorage) -> set[int]:
    """Trial ids that have a heartbeat record at all (a worker that died before its first
    beat, or could not write one, has none)."""
    with storage.engine.connect() as conn:
        rows = conn.execute(sqlalchemy.text("SELECT trial_id FROM trial_heartbeats"))
        return {int(r[0]) for r in rows}
