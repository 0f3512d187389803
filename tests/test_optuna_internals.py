"""The private parts of Optuna this package relies on (search/internals.py), exercised
against a real RDB storage: if a new Optuna changes them, this fails, loudly and first."""

from __future__ import annotations

import time
import warnings

import optuna
import pytest

from mnist_search.search.internals import (
    retried_from,
    stale_trial_ids,
    storage_of,
    study_id,
    trial_id,
    trials_with_heartbeat,
)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_heartbeat_internals_and_the_retry_record(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            f"sqlite:///{tmp_path / 'i.db'}", heartbeat_interval=1, grace_period=1,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=1))
    study = optuna.create_study(storage=storage)
    live, dead = study.ask(), study.ask()
    assert isinstance(study_id(study), int)
    # the storage the study reads (Optuna wraps an RDB storage in a cache): a study made
    # beside it lands in the same database
    optuna.create_study(study_name="beside", storage=storage_of(study))
    assert "beside" in optuna.study.get_all_study_names(storage=storage)
    assert {trial_id(live), trial_id(dead)} == {t._trial_id for t in study.trials}
    assert trials_with_heartbeat(storage) == set()  # no beat yet: no record at all
    storage.record_heartbeat(trial_id(dead))
    assert trials_with_heartbeat(storage) == {trial_id(dead)}
    time.sleep(3.0)  # heartbeats are stored to the second; the grace is 1 s (slack for load)
    assert stale_trial_ids(storage, study) == {trial_id(dead)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)
    retry = study.ask()
    assert retried_from(storage, retry) == dead.number
    assert retried_from(storage, live) is None
