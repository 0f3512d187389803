"""The private parts of Optuna this package relies on (storage/internals.py), exercised
against a real RDB storage: if a new Optuna changes them, this fails, loudly and first."""

from __future__ import annotations

import time
import warnings

import optuna
import pytest

from mnist_search.storage.internals import (
    retried_from,
    stale_trial_ids,
    storage_of,
    study_id,
    trial_id,
    trials_with_heartbeat,
)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
@pytest.mark.slow  # waits out a heartbeat's grace period
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


def test_user_attrs_note_and_beat_in_one_transaction_read_back_as_optunas(tmp_path):
    from optuna_dashboard import get_note

    from mnist_search.storage.rows import set_user_attrs

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'a.db'}", heartbeat_interval=60)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    attrs = {"seed": 7, "config": {"hidden": [16], "lr": 0.1}, "curve": [1.5, 0.25],
             "none": None, "label": "base · ü"}
    set_user_attrs(trial, attrs, note="**base** · note", beat=True)
    set_user_attrs(trial, {"seed": 8})  # an upsert: the later value wins
    assert trial.user_attrs == {**attrs, "seed": 8}  # the trial's own view is kept current
    fresh = optuna.load_study(study_name=study.study_name, storage=storage)
    assert fresh.trials[0].user_attrs == {**attrs, "seed": 8}
    assert get_note(trial) == "**base** · note"  # as optuna-dashboard reads it
    assert trials_with_heartbeat(storage) == {trial_id(trial)}
    study.tell(trial, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        set_user_attrs(trial, {"late": 1})


def test_the_private_names_this_package_uses_exist():
    """A rename in a new Optuna (or optuna-dashboard) must fail here, not be skipped."""
    from optuna.storages import RDBStorage
    from optuna.storages._rdb import models, storage
    from optuna_dashboard import _note

    from mnist_search.storage.retry import RETRIED, RetryingRDBStorage

    private = [n for n in RETRIED if n.startswith("_")]
    assert private, "RETRIED names no private method: this test checks nothing"
    for name in private:
        assert callable(getattr(RDBStorage, name, None)), f"RDBStorage.{name} is gone"
        assert getattr(RetryingRDBStorage, name) is not getattr(RDBStorage, name)
    assert callable(storage._create_scoped_session)
    for model in ("TrialModel", "TrialUserAttributeModel", "StudySystemAttributeModel",
                  "TrialSystemAttributeModel", "TrialHeartbeatModel"):
        assert hasattr(models, model)
    assert callable(models.TrialHeartbeatModel.where_trial_id)
    assert callable(_note.note_ver_key) and callable(_note.split_body)
    from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX
    from optuna.study._tell import _tell_with_warning

    assert isinstance(ARTIFACTS_ATTR_PREFIX, str) and callable(_tell_with_warning)
    from optuna.storages._base import DEFAULT_STUDY_NAME_PREFIX

    assert isinstance(DEFAULT_STUDY_NAME_PREFIX, str)
    from optuna.storages._cached_storage import _CachedStorage, _StudyInfo

    assert callable(_CachedStorage._add_trials_to_cache) and callable(_StudyInfo)
    cached = _CachedStorage(optuna.storages.RDBStorage("sqlite://"))
    assert hasattr(cached, "_lock") and isinstance(cached._studies, dict)


def test_an_artifact_recorded_with_the_results_reads_back_as_upload_artifacts(tmp_path):
    """The record written beside a trial's results is what Optuna's own readers find, the
    same as upload_artifact writes for the same file."""
    from optuna.artifacts import (
        ArtifactMeta,
        FileSystemArtifactStore,
        download_artifact,
        get_all_artifact_meta,
        upload_artifact,
    )

    from mnist_search.storage.internals import artifact_attr
    from mnist_search.storage.rows import set_user_attrs

    store = FileSystemArtifactStore(tmp_path)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'a.db'}")
    ours, theirs = study.ask(), study.ask()
    (tmp_path / "m.safetensors").write_bytes(b"weights")
    upload_artifact(artifact_store=store, file_path=str(tmp_path / "m.safetensors"),
                    study_or_trial=theirs, mimetype="application/x")
    meta = ArtifactMeta(artifact_id="a1", filename="m.safetensors", mimetype="application/x",
                        encoding=None)
    (tmp_path / "a1").write_bytes(b"weights")
    set_user_attrs(ours, {"seed": 1}, system_attrs=dict([artifact_attr(meta)]))
    assert get_all_artifact_meta(ours) == [meta]
    (theirs_meta,) = get_all_artifact_meta(theirs)
    stored = {t.number: t.system_attrs for t in study.get_trials()}
    assert stored[0] == {artifact_attr(meta)[0]: artifact_attr(meta)[1]}
    assert stored[1] == dict([artifact_attr(theirs_meta)])  # byte for byte Optuna's format
    download_artifact(artifact_store=store, file_path=str(tmp_path / "back"), artifact_id="a1")
    assert (tmp_path / "back").read_bytes() == b"weights"


def test_tell_trial_tells_and_refuses_as_study_tell_does(tmp_path):
    from mnist_search.storage.internals import tell_trial

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 't.db'}")
    done, pruned, bad = study.ask(), study.ask(), study.ask()
    tell_trial(study, done, [0.5])
    pruned.report(0.25, 1)
    tell_trial(study, pruned, state=optuna.trial.TrialState.PRUNED)
    with pytest.warns(UserWarning, match="nan is not acceptable"):  # FAIL, as Study.tell
        tell_trial(study, bad, [float("nan")])
    with pytest.raises(ValueError, match="Cannot tell a COMPLETE trial"):
        tell_trial(study, done, [0.75])
    states = [(t.state.name, t.values) for t in study.get_trials()]
    assert states == [("COMPLETE", [0.5]), ("PRUNED", [0.25]), ("FAIL", None)]


def test_a_stacks_writes_are_one_transaction_and_a_finished_trial_is_refused_alone(tmp_path):
    import sqlalchemy

    from mnist_search.storage.internals import backend_of
    from mnist_search.storage.rows import AttrWrite, write_attrs

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'w.db'}")
    trials = [study.ask() for _ in range(4)]
    commits: list[int] = []
    engine = backend_of(storage_of(study)).engine
    sqlalchemy.event.listen(engine, "commit", lambda _conn: commits.append(1))
    write_attrs([AttrWrite(t, {"seed": t.number}, note=f"n{t.number}",
                           system_attrs={"s": t.number}) for t in trials])
    assert len(commits) == 1
    study.tell(trials[1], 1.0)  # finished meanwhile (by a stale check elsewhere, say)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        write_attrs([AttrWrite(t, {"late": t.number}) for t in trials])
    stored = {t.number: t for t in study.get_trials()}
    assert [stored[n].user_attrs.get("late") for n in range(4)] == [0, None, 2, 3]
    assert [stored[n].user_attrs["seed"] for n in range(4)] == [0, 1, 2, 3]
    assert [stored[n].system_attrs["s"] for n in range(4)] == [0, 1, 2, 3]


def test_new_trial_is_what_ask_makes_without_searching_the_queue(tmp_path):
    from mnist_search.storage.internals import new_trial

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'n.db'}",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    asked = study.ask()
    study.enqueue_trial({"x": 0.5})  # a caller under the study lock knows of none
    made = new_trial(study)
    assert (asked.number, made.number) == (0, 2)  # created, not popped
    assert 0.0 <= made.suggest_float("x", 0.0, 1.0) <= 1.0  # a live trial of the study
    study.tell(made, 1.0)
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states == {0: "RUNNING", 1: "WAITING", 2: "COMPLETE"}
    popped = study.ask()  # the queue is still ask's to pop
    assert popped.number == 1 and popped.suggest_float("x", 0.0, 1.0) == 0.5


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_trials_created_together_are_stored_as_optuna_stores_one_in_one_commit(tmp_path):
    """A claim's new trials: one transaction for all, each row as Optuna's own create
    writes it (read back by a storage of Optuna's that never saw them), and the live trials
    made of them are not read back first."""
    import sqlalchemy

    from mnist_search.search.lifecycle import create_trials, trial_seed
    from mnist_search.storage.connect import make_storage
    from mnist_search.storage.internals import live_trials

    url = f"sqlite:///{tmp_path / 'c.db'}"
    storage = make_storage(url, heartbeat_interval=10, beats_from_creation=True)  # a worker's
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    by_optuna = study.ask()  # number 0, as Optuna creates it
    commits, selects = [], []
    sqlalchemy.event.listen(storage.engine, "commit", lambda _conn: commits.append(1))
    sqlalchemy.event.listen(storage.engine, "before_cursor_execute", lambda _c, _cur, sql, *_:
                            selects.append(sql) if sql.lstrip().upper().startswith("SELECT")
                            else None)
    ids = create_trials(study, storage, 5, 10, 3)
    assert ids is not None and len(commits) == 1
    selects.clear()
    live = live_trials(study, ids)
    assert not [s for s in selects if "FROM trials" in s]  # not read back
    fresh = optuna.storages.RDBStorage(url)  # Optuna's own reader, no cache of ours
    for t in live:
        stored = fresh.get_trial(t._trial_id)
        assert stored.number == t.number and stored.state == optuna.trial.TrialState.RUNNING
        assert stored.user_attrs == t.user_attrs == {
            "worker": t.user_attrs["worker"], "heartbeat_s": 10,
            "seed": trial_seed(5, t.number)}
        assert stored.datetime_start == t.datetime_start and stored.params == {}
    assert [t.number for t in live] == [1, 2, 3]
    assert trials_with_heartbeat(storage) == {trial_id(t) for t in [by_optuna, *live]}
    assert storage.get_trial(trial_id(live[0])).number == 1  # outside the claim: read
    assert fresh.get_trial(by_optuna._trial_id).user_attrs == {}
    for t in live:  # live trials of the study, as ask's are
        t.suggest_float("x", 0.0, 1.0)
        study.tell(t, t.number)
    assert [t.value for t in study.get_trials(states=[optuna.trial.TrialState.COMPLETE])] == \
        [1.0, 2.0, 3.0]
    assert study.ask().number == 4


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("rdb", [True, False])
def test_state_reasons_count_what_reading_every_trial_counts(tmp_path, rdb):
    from optuna.trial import TrialState

    from mnist_search.search.queue import tally_states
    from mnist_search.storage.internals import state_reasons, waiting_trials

    storage = f"sqlite:///{tmp_path / 's.db'}" if rdb else None
    study = optuna.create_study(storage=storage)
    for value in (1.0, 2.0):
        study.tell(study.ask(), value)
    study.tell(study.ask(), state=TrialState.PRUNED)
    for reason in ("nonfinite", "invalid_config", "stale", None, ["not", "a", "string"]):
        trial = study.ask()
        if reason is not None:
            trial.set_user_attr("fail_reason", reason)
        study.tell(trial, state=TrialState.FAIL)
    study.ask().set_user_attr("fail_reason", "nonfinite")  # RUNNING: a reason, not failed
    for x in (0.3, 0.1, 0.2):
        study.enqueue_trial({"x": x})
    counted = state_reasons(study)
    assert counted[(TrialState.FAIL, "nonfinite")] == 1
    assert counted[(TrialState.FAIL, None)] == 2  # no reason, or one that is no string
    assert counted[(TrialState.RUNNING, None)] == 1
    assert tally_states(counted) == {"done": 5, "running": 1, "waiting": 3, "failed": 3,
                                     "failed_alone": 2, "complete": 2}
    queued = waiting_trials(study)
    assert [t.system_attrs["fixed_params"] for t in queued] == [{"x": 0.3}, {"x": 0.1},
                                                                 {"x": 0.2}]
    assert study.ask().number == queued[0].number  # the order ask pops them in


def _door_uses() -> tuple[list[tuple[str, str]], list[list[str]]]:
    """From storage/internals.py's source: the private (module, name) pairs it imports, and
    each private attribute chain it reads or sets ([receiver, attr, ...]), getattr's
    included, and every chain read off a name imported from a private module
    (`models.NOT_FOUND_MSG`)."""
    import ast
    import inspect

    from mnist_search.storage import internals

    tree = ast.parse(inspect.getsource(internals))
    imported, chains = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and \
                node.module.split(".")[0] in ("optuna", "optuna_dashboard"):
            for a in node.names:
                if any(p.startswith("_") for p in [*node.module.split("."), a.name]):
                    imported.append((node.module, a.name))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, (ast.Name,
                                                                          ast.Attribute)):
            parts = ast.unparse(node).split(".")
            if any(p.startswith("_") and not p.startswith("__") for p in parts[1:]) and \
                    all(p.isidentifier() for p in parts):
                chains.append(parts)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id == "getattr" and isinstance(node.args[0], ast.Name) and \
                isinstance(node.args[1], ast.Constant) and node.args[1].value.startswith("_"):
            chains.append([node.args[0].id, node.args[1].value])
    from_private = {name for _, name in imported}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, (ast.Name, ast.Attribute)):
            parts = ast.unparse(node).split(".")
            if parts[0] in from_private and all(p.isidentifier() for p in parts) and \
                    parts not in chains:
                chains.append(parts)
    return imported, chains


def test_every_private_name_the_door_uses_exists():
    """Derived from the door's source, so a new use is checked the day it is written: each
    private import resolves, and each private attribute chain (the `_thread_local` a claim
    resets, the `_backend` under Optuna's cache, a trial's `_cached_frozen_trial`...) exists
    on the real object its receiver's name stands for. Renamed in a new Optuna, these would
    otherwise fail silently (getattr's default, a new attribute set where none is read)."""
    import importlib

    from optuna.storages._cached_storage import _CachedStorage

    from mnist_search.storage.internals import backend_of, storage_of

    imported, chains = _door_uses()
    assert imported and chains, "the door names nothing private: this test checks nothing"
    for module, name in imported:
        assert hasattr(importlib.import_module(module), name), f"{module}.{name} is gone"
    rdb = optuna.storages.RDBStorage("sqlite://")
    study = optuna.create_study(storage=rdb)
    trial = study.ask()
    study.tell(trial, 1.0)
    live = study.ask()
    cached = storage_of(study)
    assert isinstance(cached, _CachedStorage)
    objects = {"study": [study], "trial": [live, study.trials[0]], "live": [live],
               "cached": [cached], "maybe_cached": [cached], "storage": [rdb],
               **{name: [getattr(importlib.import_module(module), name)]
                  for module, name in imported}}
    for chain in chains:
        receiver, *attrs = chain
        assert receiver in objects, f"name the object {receiver!r} stands for in this test"
        for obj in objects[receiver]:
            for attr in attrs:
                assert hasattr(obj, attr), f"{'.'.join(chain)}: {type(obj).__name__} " \
                    f"has no {attr}"
                obj = getattr(obj, attr)
    uses = {".".join(c) for c in chains}
    for needed in ("study._thread_local.cached_all_trials", "maybe_cached._backend",
                   "live._cached_frozen_trial", "models.NOT_FOUND_MSG"):
        assert needed in uses, f"{needed} no longer found in the door: update this test"
    assert backend_of(cached) is rdb  # the getattr's default would hide a renamed _backend


def test_the_retrying_storages_overrides_are_still_optunas_and_still_called():
    """RetryingRDBStorage.OPTUNA_OVERRIDES: each overrides a method RDBStorage still has,
    and that Optuna's storages still call; a rename (or a call moved elsewhere) would
    leave the override in place and never called: no heartbeat at creation, no held
    parameters, no stale reason."""
    from pathlib import Path

    from optuna.storages import RDBStorage

    from mnist_search.storage.retry import RetryingRDBStorage

    source = "".join(f.read_text() for f in Path(optuna.storages.__file__).parent.rglob("*.py"))
    assert "_get_prepared_new_trial" in RetryingRDBStorage.OPTUNA_OVERRIDES
    for name in RetryingRDBStorage.OPTUNA_OVERRIDES:
        assert name in vars(RetryingRDBStorage), f"{name} is listed but not overridden"
        assert callable(getattr(RDBStorage, name, None)), f"RDBStorage.{name} is gone"
        assert f".{name}(" in source, f"optuna.storages no longer calls {name}"
