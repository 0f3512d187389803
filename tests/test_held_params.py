"""A trial's suggested parameters are written with its start, in one transaction, and read
back by Optuna's own storage as Optuna writes them; a config no model can be built from
keeps the parameters that led to it; a storage that cannot hold them writes each as Optuna
does."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState
from test_trust import HUGE_SEARCH  # every architecture over the bound: each one refused

import mnist_search as ms
from mnist_search.search.lifecycle import start_trial
from mnist_search.spec import load_spec
from mnist_search.storage.internals import backend_of

from helpers import write_study

SEARCH = """
[sampler]
kind = "random"
[fixed]
dataset = DATA
epochs = 1
[search]
depth = { low = 1, high = 3 }
width = { low = 8, high = 64, log = true }
dropout = { low = 0.0, high = 0.5 }
penalty = ["none", "l1", "l2"]
penalty_lambda = { low = 1e-5, high = 1e-2, log = true }
momentum = { low = 0.0, high = 0.9 }
"""



def commits(engine: sqlalchemy.Engine) -> list[int]:
    count = [0]
    sqlalchemy.event.listen(engine, "commit", lambda _conn: count.__setitem__(0, count[0] + 1))
    return count


def stored(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    """The trials as Optuna's own storage reads them, in a fresh process's view."""
    return optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(url)).trials


def test_a_trial_s_parameters_are_written_with_its_start_in_one_transaction(
        tmp_path, synthetic_dir):
    path = write_study(tmp_path / "held.toml", synthetic_dir, SEARCH)
    url = f"sqlite:///{tmp_path / 'held.db'}"
    study = ms.open_study(path, url)
    spec = load_spec(path)
    backend = backend_of(study._storage)
    assert backend is not None
    suggested = []
    for _ in range(3):
        trial = study.ask()
        count = commits(backend.engine)
        start_trial(trial, spec, "cpu", 0)
        assert count[0] == 1, f"{count[0]} transactions for one trial's start"
        assert len(trial.params) >= 5  # depth, width_1.., dropout, penalty, [lambda,] momentum
        suggested.append((dict(trial.params), dict(trial.distributions)))
        study.tell(trial, 1.0)
    got = [(t.params, t.distributions) for t in stored(url, study.study_name)]
    assert got == suggested


def test_the_parameters_of_a_config_no_model_fits_are_kept(tmp_path, synthetic_dir):
    path = write_study(tmp_path / "huge.toml", synthetic_dir, HUGE_SEARCH)
    url = f"sqlite:///{tmp_path / 'huge.db'}"
    study = ms.open_study(path, url)
    study.optimize(ms.Objective(path, device="cpu"), n_trials=2)
    for t in stored(url, study.study_name):
        assert t.state == TrialState.FAIL
        assert t.user_attrs["fail_reason"] == "invalid_config"
        assert {"depth", "width_1", "width_2"} <= set(t.params)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_optuna_s_own_storage_writes_each_parameter_as_suggested(tmp_path, synthetic_dir):
    """A study on Optuna's own RDBStorage (a user's) holds nothing: its suggest writes each
    parameter at once, as Optuna does, and the start writes the rest."""
    path = write_study(tmp_path / "plain.toml", synthetic_dir, SEARCH)
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(study_name="plain", storage=storage, direction="maximize")
    trial = study.ask()
    count = commits(storage.engine)
    start_trial(trial, load_spec(path), "cpu", 0)
    assert count[0] >= len(trial.params) + 1  # a transaction per parameter, then the start
    assert stored(url, "plain")[0].params == trial.params


class Watching(optuna.samplers.RandomSampler):
    """Notes, as each trial's first parameter is sampled, which other trials' parameters a
    second connection to the database (another worker) can read."""

    def __init__(self, url: str) -> None:
        super().__init__(seed=0)
        self.url, self.seen = url, {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        if trial.number not in self.seen:
            other = optuna.load_study(study_name=study.study_name,
                                      storage=optuna.storages.RDBStorage(self.url))
            self.seen[trial.number] = {t.number for t in other.get_trials(deepcopy=False)
                                       if t.params and t.number != trial.number}
        return super().sample_independent(study, trial, param_name, param_distribution)


def test_a_claim_s_trials_each_see_the_parameters_sampled_before_them(tmp_path,
                                                                       synthetic_dir):
    """A worker starting several trials at once (a claim) writes each one's parameters before
    the next is sampled, so a sampler that reads running trials (TPE's constant liar) finds
    them, as it would another worker's; the last trial's go with the claim's start."""
    from mnist_search.workers.context import WorkerContext, WorkerOrders
    from mnist_search.workers.slots import Slots

    path = write_study(tmp_path / "claim.toml", synthetic_dir, SEARCH)
    url = f"sqlite:///{tmp_path / 'claim.db'}"
    study = ms.open_study(path, url)
    study.sampler = watching = Watching(url)
    backend = backend_of(study._storage)
    assert backend is not None
    orders = WorkerOrders(spec_path=str(path), url=url, target=3, device="cpu", heartbeat=0,
                          population=3)
    ctx = WorkerContext(orders, load_spec(path), backend, study, seed_base=0)
    trials = [study.ask() for _ in range(3)]
    numbers = [t.number for t in trials]
    with Slots(ctx, 3, mixed=False) as slots:
        slots.join(trials)
        assert watching.seen == {numbers[0]: set(), numbers[1]: {numbers[0]},
                                 numbers[2]: {numbers[0], numbers[1]}}
        got = {t.number: t.params for t in stored(url, study.study_name)}
        assert got == {t.number: t.params for t in trials}
        for t in trials:
            study.tell(t, 1.0)
        slots.trials.clear()


def test_a_start_inside_another_holding_block_writes_its_own_parameters(tmp_path,
                                                                         synthetic_dir):
    """A start within a caller's own params_held block (same storage) still writes its
    trial's parameters with it, not leaving them to a block that knows nothing of them."""
    from mnist_search.storage.rows import params_held

    path = write_study(tmp_path / "nest.toml", synthetic_dir, SEARCH)
    url = f"sqlite:///{tmp_path / 'nest.db'}"
    study = ms.open_study(path, url)
    trial = study.ask()
    with params_held(study) as outer:
        start_trial(trial, load_spec(path), "cpu", 0)
        assert not any(outer.values())  # nothing left behind for the outer block
    assert stored(url, study.study_name)[0].params == trial.params


def test_holding_ends_with_its_block(tmp_path, synthetic_dir):
    """params_held never switching off: a parameter suggested after the block would be held
    for a start that never comes, and lost. Inside it is held; after it, written at once."""
    from mnist_search.storage.rows import params_held

    path = write_study(tmp_path / "off.toml", synthetic_dir, SEARCH)
    url = f"sqlite:///{tmp_path / 'off.db'}"
    study = ms.open_study(path, url)
    first, second = study.ask(), study.ask()

    def params_of(trial: optuna.Trial) -> dict:
        return next(t for t in stored(url, study.study_name) if t.number == trial.number).params

    with params_held(study) as held:
        first.suggest_float("momentum", 0.0, 0.9)
        assert held and not params_of(first)  # held, not written
    second.suggest_float("momentum", 0.0, 0.9)
    assert params_of(second) == second.params != {}


def three_running(tmp_path, synthetic_dir):
    """(url, study, spec, three RUNNING trials) of a fresh study on SQLite."""
    path = write_study(tmp_path / "end.toml", synthetic_dir, SEARCH)
    url = f"sqlite:///{tmp_path / 'end.db'}"
    study = ms.open_study(path, url)
    return url, study, load_spec(path), [study.ask() for _ in range(3)]


def test_trials_that_end_together_are_recorded_in_one_transaction(tmp_path, synthetic_dir):
    """settle_all writing each trial in its own transaction: a stack's members end
    together, and their records go in one commit."""
    from mnist_search.search.lifecycle import settle_all
    from mnist_search.training.train import StopTraining

    url, study, spec, trials = three_running(tmp_path, synthetic_dir)
    count = commits(backend_of(study._storage).engine)
    settled = settle_all([(t, spec, StopTraining(), []) for t in trials])
    assert count[0] == 1, f"{count[0]} transactions for three trials' records"
    assert [s.state for s in settled] == [TrialState.PRUNED] * 3
    assert [t.user_attrs.get("fail_reason") for t in stored(url, study.study_name)] == \
        ["pruned"] * 3  # each trial's own record, all in that one commit


def test_another_thread_on_the_same_storage_never_sees_this_thread_s_unit_of_work(
        tmp_path, synthetic_dir):
    """A worker's heartbeat thread shares its storage: while the trainer's thread holds its
    trials' parameters, the other thread's writes go to the database at once, and its unit
    of work is its own."""
    import threading

    from mnist_search.storage.internals import trial_id
    from mnist_search.storage.rows import params_held

    path = write_study(tmp_path / "two.toml", synthetic_dir, SEARCH)
    url = f"sqlite:///{tmp_path / 'two.db'}"
    study = ms.open_study(path, url)
    backend = backend_of(study._storage)
    first, second = study.ask(), study.ask()
    seen = {}

    def params_of(trial: optuna.Trial) -> dict:
        return next(t for t in stored(url, study.study_name) if t.number == trial.number).params

    def beside() -> None:  # as the heartbeat thread runs beside the training
        seen["writes"] = backend.trial_writes()
        second.suggest_float("momentum", 0.0, 0.9)
        backend.record_heartbeat(trial_id(second))

    with params_held(study) as held:
        first.suggest_float("momentum", 0.0, 0.9)
        thread = threading.Thread(target=beside)
        thread.start()
        thread.join()
        assert list(held) == [trial_id(first)]
        assert seen["writes"] is not backend.trial_writes()
        assert not seen["writes"].holding and not seen["writes"].held
        assert params_of(second) == second.params != {}  # written at once
        assert not params_of(first)  # still held


def test_a_copy_of_the_storage_starts_with_no_thread_s_state(tmp_path):
    """Optuna pickles storages (to hand them to other processes): the per-thread state is
    not carried, and the copy works."""
    import pickle

    from mnist_search.storage.connect import make_storage

    storage = make_storage(f"sqlite:///{tmp_path / 'p.db'}")
    study = optuna.create_study(storage=storage, study_name="p")
    with storage.trial_writes().creating(lambda number: {"seed": number}):
        copy = pickle.loads(pickle.dumps(storage))
        assert copy.trial_writes().attrs is None  # not the original thread's block
    study.enqueue_trial({"x": 1.0})
    assert copy.get_n_trials(study._study_id) == 1


def test_a_batch_ends_with_its_records_in_one_transaction_then_a_tell_each(tmp_path,
                                                                            synthetic_dir):
    """finish_trials, the end verb of a batch: the records in one commit, then each trial
    told, let go (a worker's heartbeat stops beating for it) just before its own tell."""
    from mnist_search.search.lifecycle import finish_trials
    from mnist_search.training.train import StopTraining

    url, study, spec, trials = three_running(tmp_path, synthetic_dir)
    states_at_let_go, commits_at_let_go = [], []

    def let_go(trial: optuna.Trial) -> None:
        commits_at_let_go.append(count[0])
        read = stored(url, study.study_name)
        assert [t.user_attrs.get("fail_reason") for t in read] == ["pruned"] * 3
        states_at_let_go.append({t.number: t.state for t in read})

    count = commits(backend_of(study._storage).engine)
    told = finish_trials(study, [(t, spec, StopTraining(), []) for t in trials], let_go=let_go)
    assert commits_at_let_go[0] == 1, "every record in one transaction, before any tell"
    assert [s.state for s in told] == [TrialState.PRUNED] * 3
    numbers = [t.number for t in trials]
    # the k-th let-go comes when the k earlier trials are told and it is still running
    assert [[at[n] for n in numbers] for at in states_at_let_go] == [
        [TrialState.PRUNED] * k + [TrialState.RUNNING] * (3 - k) for k in range(3)]
    assert [t.state for t in stored(url, study.study_name)] == [TrialState.PRUNED] * 3
