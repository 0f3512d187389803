"""The one door to Optuna's and optuna-dashboard's private parts: every private name this
package imports from them, and every private attribute of their objects it reads or sets, is
here; the rest of the package imports these from this module (tests/test_layout.py keeps it
so). The one exception is RetryingRDBStorage's overrides of RDBStorage's private methods,
named in that class (OPTUNA_OVERRIDES, RETRIED).

Why each is needed: Optuna 5 offers no public way to ask which RUNNING trials have a stale
heartbeat without failing them (`fail_stale_trials` does both, and only for a study with a
live sampler), nor which trials have a heartbeat record at all; `reap` needs both to tell a
dead worker from a live one. Trial and study ids (as opposed to numbers) are what the storage
methods take, and a loaded study does not say which storage it came from (confirm puts a
study beside it). Optuna writes one attribute per transaction; a trial records about 30, so
rows.py writes them in one transaction each time, with Optuna's own tables (models) and
session scope (scoped_session). A claim, under the study lock every worker waits on, counts
trials with one aggregate query over Optuna's tables (state_reasons) instead of reading every
unfinished trial through its cache, and puts the trials it creates together into that cache
as Optuna's create_new_trial does. tests/test_optuna_internals.py, whose names test is
derived from this module's source, fails loudly if a new Optuna changes any of this;
pyproject caps optuna below 6 for the same reason.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import optuna
import sqlalchemy
from optuna.artifacts import ArtifactMeta
from optuna.storages import RDBStorage
from optuna.storages._base import DEFAULT_STUDY_NAME_PREFIX
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState

__all__ = ["DEFAULT_STUDY_NAME_PREFIX", "artifact_attr", "backend_of", "cached_view",
           "is_not_found", "live_trials", "models", "new_trial", "new_trial_id", "new_trial_ids",
           "note_rows", "retried_from", "scoped_session", "set_param_without_commit",
           "stale_trial_ids", "state_reasons", "storage_call", "storage_of", "storage_url",
           "study_id", "tell_trial", "trial_id", "trial_of", "trials_with_heartbeat",
           "waiting_trials"]

T = TypeVar("T")


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (its `number` counts within the study only)."""
    return int(trial._trial_id)


def study_id(study: optuna.Study) -> int:
    return int(study._study_id)


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a loaded study reads and writes (a study beside it goes there too)."""
    storage: optuna.storages.BaseStorage = study._storage
    return storage


def storage_url(study: optuna.Study) -> str:
    """The URL of the RDB storage a loaded study lives in, password included (for worker
    processes, which read it on stdin); UsageError for a storage with no URL."""
    from ..errors import UsageError

    storage = backend_of(study._storage)
    if storage is None:
        raise UsageError(f"study {study.study_name!r} is not in a database: confirm trains "
                         "its replicates in worker processes, which need a storage URL "
                         "(sqlite:///FILE.db or postgresql://...)")
    return str(storage.engine.url.render_as_string(hide_password=False))


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


def backend_of(maybe_cached: optuna.storages.BaseStorage) -> RDBStorage | None:
    """The RDB storage under Optuna's cache (or the storage itself), else None."""
    inner = getattr(maybe_cached, "_backend", maybe_cached)
    return inner if isinstance(inner, RDBStorage) else None


# Optuna's RDB tables (models) and its session scope, the one way this package writes rows
# as Optuna's own storage writes them (rows.py, RetryingRDBStorage); DEFAULT_STUDY_NAME_PREFIX
# names a study created without a name, as RDBStorage.create_new_study does.


def scoped_session(storage: RDBStorage, ignore_integrity_error: bool = False
                   ) -> contextlib.AbstractContextManager[Any]:
    """A session of `storage` committed on leaving, rolled back on error, as each of
    RDBStorage's own public methods takes one (its `_create_scoped_session`)."""
    return _create_scoped_session(storage.scoped_session, ignore_integrity_error)


def set_param_without_commit(storage: RDBStorage, session: Any, tid: int, name: str,
                             value: float, distribution: Any, previous: Any) -> None:
    """Optuna's own write of one trial parameter into the caller's transaction, its
    distribution check included (RDBStorage._set_trial_param_without_commit)."""
    storage._set_trial_param_without_commit(session, tid, name, value, distribution, previous)


def cached_view(live: optuna.Trial) -> FrozenTrial:
    """The live trial's own view of itself, which Trial.set_user_attr keeps current."""
    view: FrozenTrial = live._cached_frozen_trial
    return view


def note_rows(tid: int, note: str) -> dict[str, Any]:
    """The study system attrs optuna_dashboard.save_note writes for a trial's first note:
    its version (1) and its body in chunks, in the dashboard's own keys."""
    from optuna_dashboard._note import note_ver_key, split_body

    return {note_ver_key(tid): 1, **split_body(note, tid)}


def is_not_found(exc: BaseException) -> bool:
    """Whether `exc` is Optuna's RDB storage answering that a study or trial does not exist
    (its KeyError or ValueError with models.NOT_FOUND_MSG, or the KeyError of a trial number
    it does not hold): an answer to the question asked, not a row it could not read."""
    text = str(exc.args[0]) if isinstance(exc, (KeyError, ValueError)) and exc.args else ""
    return text == models.NOT_FOUND_MSG or text.startswith("No trial with trial number ")


def storage_call(storage: RDBStorage, name: str, call: Callable[[], T]) -> T:
    """call(), through the storage's retries where it has them (RetryingRDBStorage)."""
    retrying = getattr(storage, "retrying", None)  # a RetryingRDBStorage rides out faults
    return call() if retrying is None else retrying(name, call)



def artifact_attr(meta: ArtifactMeta) -> tuple[str, str]:
    """The trial system attr (key, value) by which upload_artifact records an artifact, and
    get_all_artifact_meta finds it: written here with the trial's results instead of in a
    transaction of its own."""
    from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX

    return ARTIFACTS_ATTR_PREFIX + meta.artifact_id, json.dumps(dataclasses.asdict(meta))


def new_trial(study: optuna.Study) -> optuna.Trial:
    """study.ask() where the caller knows no trial is WAITING: trial_of(new_trial_id)."""
    return trial_of(study, new_trial_id(study))


def new_trial_id(study: optuna.Study) -> int:
    """The id of a trial created as study.ask() creates one, where the caller knows no trial
    is WAITING (it holds the study lock, under which it found none): Study.ask first
    searches the queue, a read of every unfinished trial of every worker with all their
    attributes, to find nothing to pop."""
    study._thread_local.cached_all_trials = None  # as ask does: the study's view is stale
    return int(study._storage.create_new_trial(study._study_id))


def new_trial_ids(study: optuna.Study, n: int) -> list[int]:
    """n trials created as new_trial_id creates each, in one transaction where the storage
    can (RetryingRDBStorage.create_new_trials), each put in Optuna's cache as its
    create_new_trial does (set_trial_param looks the trial up there)."""
    from optuna.storages._cached_storage import _CachedStorage, _StudyInfo

    cached, backend = study._storage, backend_of(study._storage)
    create = getattr(backend, "create_new_trials", None)
    if n == 1 or create is None or not isinstance(cached, _CachedStorage):
        return [new_trial_id(study) for _ in range(n)]
    sid = study_id(study)
    study._thread_local.cached_all_trials = None  # as ask does: the study's view is stale
    frozen: list[FrozenTrial] = create(sid, n)
    with cached._lock:
        cached._studies.setdefault(sid, _StudyInfo())
        cached._add_trials_to_cache(sid, frozen)
    return [trial_id(t) for t in frozen]


def state_reasons(study: optuna.Study) -> dict[tuple[TrialState, str | None], int]:
    """How many trials of the study are in each state, FAIL ones by their `fail_reason`
    user attribute (None: none), in one aggregate query: what a claim counts, without
    Optuna's read of every unfinished trial with all its attributes (get_trials)."""
    backend = backend_of(study._storage)
    if backend is None:
        out: dict[tuple[TrialState, str | None], int] = {}
        for t in study.get_trials(deepcopy=False):
            key = (t.state, _reason(t.user_attrs.get("fail_reason"), t.state))
            out[key] = out.get(key, 0) + 1
        return out
    trial, attr = models.TrialModel, models.TrialUserAttributeModel
    query = sqlalchemy.select(trial.state, attr.value_json, sqlalchemy.func.count()) \
        .select_from(trial).outerjoin(attr, sqlalchemy.and_(
            attr.trial_id == trial.trial_id, attr.key == "fail_reason",
            trial.state == TrialState.FAIL)) \
        .where(trial.study_id == study_id(study)).group_by(trial.state, attr.value_json)

    def read() -> dict[tuple[TrialState, str | None], int]:
        with scoped_session(backend) as session:
            rows = session.execute(query).all()
        counted: dict[tuple[TrialState, str | None], int] = {}
        for state, reason, n in rows:
            state = TrialState(state)
            key = (state, None if reason is None else _reason(json.loads(reason), state))
            counted[key] = counted.get(key, 0) + int(n)
        return counted

    return storage_call(backend, "state_reasons", read)


def _reason(value: Any, state: TrialState) -> str | None:
    """A FAIL trial's fail_reason as counted: a string, else None (so is any other state's)."""
    return value if state == TrialState.FAIL and isinstance(value, str) else None


def waiting_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The study's WAITING trials in the order Study.ask pops them, read alone (Optuna's
    cache would read every unfinished trial to find them)."""
    backend = backend_of(study._storage)
    source = study._storage if backend is None else backend
    trials = source.get_all_trials(study_id(study), deepcopy=False, states=(TrialState.WAITING,))
    return sorted(trials, key=lambda t: t.number)


def live_trials(study: optuna.Study, made: Sequence[optuna.Trial | int]) -> list[optuna.Trial]:
    """Each trial as a live optuna.Trial, those given by id made by trial_of; a trial that
    this thread has just created (create_new_trials) is not read back first."""
    unit = getattr(backend_of(study._storage), "trial_writes", None)  # (rows.TrialWrites)
    with contextlib.nullcontext() if unit is None else unit().serving_created():
        return [t if isinstance(t, optuna.Trial) else trial_of(study, t) for t in made]


def trial_of(study: optuna.Study, tid: int) -> optuna.Trial:
    """The live trial of a RUNNING trial's id, as study.ask returns it (its constructor
    reads the trial and runs the sampler's before_trial)."""
    return optuna.Trial(study, tid)


def tell_trial(study: optuna.Study, trial: optuna.Trial, values: Sequence[float] | None = None,
               state: TrialState | None = None) -> None:
    """study.tell(trial, values, state), with Study.tell's checks and errors, less its closing
    read of the whole trial (six queries) and deep copy, whose result is never used."""
    from optuna.study._tell import _tell_with_warning

    _tell_with_warning(study, trial, None if values is None else list(values), state)
