"""Where a worker's time goes (workers/ledger.py): the sampler's own time, each nested call
counted once, the storage's time of this thread only, and a sampler that stays itself."""

from __future__ import annotations

import threading
import time

import optuna

from mnist_search.storage.connect import make_storage
from mnist_search.storage.retry import storage_seconds
from mnist_search.workers.ledger import Ledger

NAP = 0.1


class Napping(optuna.samplers.RandomSampler):
    """Naps in each relative call; sample_relative calls infer_relative_search_space again
    (as some samplers do), so one trial naps three times, two of them nested."""

    def infer_relative_search_space(self, study, trial):
        time.sleep(NAP)
        return {}

    def sample_relative(self, study, trial, search_space):
        self.infer_relative_search_space(study, trial)
        time.sleep(NAP)
        study.get_trials(deepcopy=False)  # a storage read inside the sampler: storage's time
        return {}


def test_the_sampler_s_own_time_counts_each_call_once(tmp_path):
    sampler = Napping(seed=0)
    storage = make_storage(f"sqlite:///{tmp_path / 'l.db'}")
    study = optuna.create_study(storage=storage, sampler=sampler)
    ledger = Ledger(storage)
    ledger.time_sampler(study.sampler)
    assert isinstance(study.sampler, Napping)  # still the sampler it was
    trial = study.ask()  # infer (1 nap), then sample_relative (2 naps, one nested)
    trial.suggest_float("x", 0.0, 1.0)
    study.tell(trial, 1.0)
    wall, sampler_s, storage_s = ledger.shares()
    # three naps: the nested call once (not four), and the read inside it is storage's
    assert 3 * NAP <= sampler_s < 3.8 * NAP
    assert storage_s > 0 and wall >= sampler_s + storage_s


def test_storage_time_is_this_thread_s_only(tmp_path):
    storage = make_storage(f"sqlite:///{tmp_path / 'l.db'}")
    study = optuna.create_study(storage=storage)
    before = storage_seconds(storage)
    study.enqueue_trial({"x": 1.0})
    mine = storage_seconds(storage)
    assert mine > before  # this thread's call counted

    def elsewhere() -> None:  # as a heartbeat thread writes beside the training
        for _ in range(20):
            study.enqueue_trial({"x": 2.0})

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert storage_seconds(storage) == mine
