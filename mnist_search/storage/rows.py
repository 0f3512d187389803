"""A trial's writes in one transaction: its attributes, first note, heartbeat, system
attributes and suggested parameters (set_user_attrs, write_attrs, params_held), where
Optuna writes one attribute or parameter per transaction; a trial records about 30. Each
row is written the way Optuna's own calls write it (its parameters by Optuna's own code),
the note in optuna-dashboard's own layout, so both read them back unchanged
(tests/test_optuna_internals.py).

A claim's new trials are written the same way (insert_trials): a claim creates them under the
study lock every worker waits on, where Optuna's own create_new_trial takes a transaction and
an ORM flush per trial; insert_trials writes the same rows (the trial, its heartbeat, its user
attributes) for n trials in a few statements of the caller's transaction
(RetryingRDBStorage.create_new_trials).

What a thread writes with its trials' creation and start is its unit of work
(TrialWrites), one per thread on the storage: the attributes at creation, the trials a
claim created, the parameters held; flush writes a start's share of it in one transaction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import optuna
import sqlalchemy
from optuna.distributions import BaseDistribution
from optuna.storages import RDBStorage
from optuna.trial import BaseTrial, FrozenTrial, TrialState

from .internals import (
    backend_of,
    cached_view,
    models,
    note_rows,
    scoped_session,
    set_param_without_commit,
    storage_call,
    storage_of,
    study_id,
    trial_id,
)

__all__ = ["AttrWrite", "HeldParam", "TrialWrites", "claim_waiting", "flush", "insert_trials",
           "params_held", "record_fail_reason", "set_user_attrs", "trial_writes",
           "write_attrs", "write_held"]


@dataclasses.dataclass(frozen=True)
class HeldParam:
    """A parameter a trial suggested, held to be written with the trial's start: the
    arguments of Optuna's RDBStorage._set_trial_param."""

    name: str
    value: float  # Optuna's internal representation
    distribution: BaseDistribution
    previous: BaseDistribution | None  # the study's distribution of it, as Optuna's cache knew


@dataclasses.dataclass
class TrialWrites:
    """One thread's unit of work on one storage: what is written with its trials' creation
    or start instead of a transaction each. RetryingRDBStorage keeps one per thread
    (trial_writes), so its heartbeat thread, which shares the storage, never sees another's.
    Each part is scoped by a context manager, as Optuna scopes its heartbeat thread:

    - creating(attrs): the user attributes each new trial gets in the transaction that
      creates it (RetryingRDBStorage's _get_prepared_new_trial and create_new_trials), or
      that claims it from the queue (claim_waiting);
    - serving_created(): the trials the last create_new_trials made, each answered once by
      get_trial from what was written instead of read back (six queries);
    - holding_params() (params_held): the parameters Optuna hands the storage, held by trial id
      until flush writes them with the trial's start, or write_held alone.
    """

    attrs: Callable[[int], Mapping[str, Any]] | None = None
    created: dict[int, FrozenTrial] = dataclasses.field(default_factory=dict)
    serving: bool = False
    holding: bool = False
    held: dict[int, list[HeldParam]] = dataclasses.field(default_factory=dict)

    def hold(self, tid: int, param: HeldParam) -> bool:
        """Hold trial `tid`'s parameter while holding is on (True), else leave it (False)."""
        if self.holding:
            self.held.setdefault(tid, []).append(param)
        return self.holding

    def take(self, tid: int) -> list[HeldParam]:
        """The parameters held for trial `tid`, no longer held."""
        return self.held.pop(tid, [])

    def known(self, tid: int) -> FrozenTrial | None:
        """The trial `tid` as create_new_trials wrote it, once, within serving_created."""
        return self.created.pop(tid, None) if self.serving else None

    @contextlib.contextmanager
    def creating(self, attrs: Callable[[int], Mapping[str, Any]]) -> Iterator[None]:
        self.attrs = attrs
        try:
            yield
        finally:
            self.attrs = None

    @contextlib.contextmanager
    def serving_created(self) -> Iterator[None]:
        self.serving = True
        try:
            yield
        finally:
            self.serving, self.created = False, {}

    @contextlib.contextmanager
    def holding_params(self) -> Iterator[dict[int, list[HeldParam]]]:
        """Hold parameters within the block; nested, the outer block's rows are yielded. A
        batch held before and never flushed (an error came between) is dropped, as the
        trials it was held for are failed without it."""
        if self.holding:
            yield self.held
            return
        self.held.clear()
        self.holding = True
        try:
            yield self.held
        finally:
            self.holding = False


def trial_writes(storage: RDBStorage | None) -> TrialWrites | None:
    """This thread's unit of work on `storage` (RetryingRDBStorage.trial_writes), or None
    where the storage keeps none (Optuna's own: each write is its own transaction)."""
    unit = getattr(storage, "trial_writes", None)
    return None if unit is None else unit()


def _unit_of(study: optuna.Study | None) -> TrialWrites | None:
    return None if study is None else trial_writes(backend_of(storage_of(study)))


@contextlib.contextmanager
def params_held(study: optuna.Study | None) -> Iterator[dict[int, list[HeldParam]]]:
    """Within the block, the parameters this thread suggests on `study`'s trials are held,
    by trial id, instead of written a transaction each (a searched trial suggests about 6),
    where its storage keeps a unit of work (TrialWrites); flush writes them with the trial's
    start, which is how a trial's parameters are written whole or not at all. Elsewhere
    nothing is held; nested on the same storage, the outer block's rows are yielded, so the
    inner caller finds (and writes) its own trials'."""
    unit = _unit_of(study)
    if unit is None:
        yield {}
        return
    with unit.holding_params() as held:
        yield held


def _upsert(session: Any, model: Any, owner: dict[str, int], attrs: Mapping[str, Any]) -> None:
    """Every (key, value) of `attrs` into `model`'s table for `owner` (trial_id or study_id),
    inserted or updated: one prepared statement run for all rows where the database has
    ON CONFLICT (SQLite >= 3.24, PostgreSQL), else row by row as Optuna does."""
    (column, owner_id), = owner.items()
    rows = [{"owner": owner_id, "key": k, "value": json.dumps(v)} for k, v in attrs.items()]
    if session.get_bind().dialect.name in ("sqlite", "postgresql"):
        table = model.__tablename__
        session.execute(sqlalchemy.text(
            f"INSERT INTO {table} ({column}, key, value_json) VALUES (:owner, :key, :value) "
            f"ON CONFLICT ({column}, key) DO UPDATE SET value_json = excluded.value_json"),
            rows)
        return
    for row in rows:
        found = session.query(model).filter_by(**owner, key=row["key"]).one_or_none()
        if found is None:
            session.add(model(**owner, key=row["key"], value_json=row["value"]))
        else:
            found.value_json = row["value"]


def _beat(session: Any, model: Any, tid: int) -> None:
    """RDBStorage.record_heartbeat's write, inside the caller's transaction."""
    row = model.where_trial_id(tid, session, True)
    if row is None:
        session.add(model(trial_id=tid))
    else:
        row.heartbeat = session.execute(sqlalchemy.func.now()).scalar_one()


def claim_waiting(storage: RDBStorage, tid: int,
                  attrs: Callable[[int], Mapping[str, Any]] | None = None) -> bool:
    """Optuna's claim of an enqueued trial (set_trial_state_values to RUNNING: WAITING ->
    RUNNING, its start stamped; False when it is no longer WAITING) with a heartbeat and
    the user attributes `attrs` gives its number (TrialWrites.creating), in the same
    transaction. A worker killed between two commits would leave a RUNNING trial that
    never beat, which Optuna 5 never counts stale: its label would never run again."""
    try:
        with scoped_session(storage) as session:
            trial = models.TrialModel.find_or_raise_by_id(tid, session, for_update=True)
            storage.check_trial_is_updatable(tid, trial.state)
            if trial.state != TrialState.WAITING:
                return False
            trial.state = TrialState.RUNNING
            trial.datetime_start = datetime.datetime.now()  # as Optuna stamps it
            _beat(session, models.TrialHeartbeatModel, tid)
            if attrs is not None:
                _upsert(session, models.TrialUserAttributeModel, {"trial_id": tid},
                        attrs(trial.number))
    except sqlalchemy.exc.IntegrityError:  # as Optuna's: another writer's claim won
        return False
    return True


def record_fail_reason(storage: RDBStorage, tid: int, reason: str) -> None:
    """The user attr fail_reason of a trial Optuna has already failed (its stale check
    fails a trial before anyone can say why): the one attribute written to a finished
    trial, as Optuna's own set_trial_user_attr would refuse."""
    def write() -> None:
        with scoped_session(storage, True) as session:
            _upsert(session, models.TrialUserAttributeModel, {"trial_id": tid},
                    {"fail_reason": reason})

    storage_call(storage, "record_fail_reason", write)


@dataclasses.dataclass(frozen=True)
class AttrWrite:
    """What set_user_attrs writes to one trial (see there)."""

    trial: BaseTrial
    attrs: Mapping[str, Any]
    note: str | None = None
    beat: bool = False
    system_attrs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    params: Sequence[HeldParam] = ()  # written before the attributes (params_held)


def set_user_attrs(trial: BaseTrial, attrs: Mapping[str, Any], note: str | None = None,
                   beat: bool = False, system_attrs: Mapping[str, Any] | None = None) -> None:
    """trial.set_user_attr for each of `attrs` (with `note`, the trial's first
    optuna-dashboard note; with `beat`, a heartbeat, as storage.record_heartbeat; with
    `system_attrs`, storage.set_trial_system_attr for each), in one transaction where the
    trial is an optuna.Trial on an RDB storage; upserts, so a retried commit is harmless.
    Like Optuna, it refuses a finished trial (UpdateFinishedTrialError).

    The note is written as optuna_dashboard.save_note writes a first note (version 1, the
    body in chunks, in the dashboard's keys) without save_note's two reads of every system
    attr of the study (every trial's note), which cost O(trials) per trial."""
    write_attrs([AttrWrite(trial, attrs, note, beat, system_attrs or {})])


def write_attrs(writes: Sequence[AttrWrite]) -> None:
    """set_user_attrs for each write, the trials of one study together in one transaction
    (a stack's members start and end together). Should one of them be finished already,
    each is written on its own, so the refusal falls on that trial alone, as it would."""
    first = writes[0].trial if writes else None
    backend = backend_of(first.storage) if isinstance(first, optuna.Trial) and all(
        isinstance(w.trial, optuna.Trial) for w in writes) else None
    if backend is None:  # (heartbeats exist on RDB storages only)
        for w in writes:
            _write_through_optuna(w)
        return
    try:
        storage_call(backend, "set_user_attrs", lambda: _write_rows(backend, writes))
        written, refused = list(writes), None
    except optuna.exceptions.UpdateFinishedTrialError as exc:
        if len(writes) == 1:
            raise
        written, refused = [], exc
        for w in writes:
            try:
                storage_call(backend, "set_user_attrs",
                             functools.partial(_write_rows, backend, [w]))
                written.append(w)
            except optuna.exceptions.UpdateFinishedTrialError as one:
                refused = one
    for w in written:  # the trial's own view kept current, as Trial.set_user_attr does
        assert isinstance(w.trial, optuna.Trial)
        cached_view(w.trial).user_attrs.update(w.attrs)
        cached_view(w.trial).system_attrs.update(w.system_attrs)
    if refused is not None:
        raise refused


def _write_through_optuna(w: AttrWrite) -> None:
    """One write by Optuna's own calls, an attribute at a time (a storage that is no RDB)."""
    if w.params:
        assert isinstance(w.trial, optuna.Trial)  # only a trial with a storage holds any
        for p in w.params:
            w.trial.storage.set_trial_param(trial_id(w.trial), p.name, p.value, p.distribution)
    for key, value in w.attrs.items():
        w.trial.set_user_attr(key, value)
    if isinstance(w.trial, optuna.Trial):  # a FixedTrial has no storage
        for key, value in w.system_attrs.items():
            w.trial.storage.set_trial_system_attr(trial_id(w.trial), key, value)
        if w.note is not None:
            from optuna_dashboard import save_note

            save_note(w.trial, w.note)


def _write_rows(backend: RDBStorage, writes: Sequence[AttrWrite]) -> None:
    with scoped_session(backend, True) as session:
        for w in writes:
            assert isinstance(w.trial, optuna.Trial)
            tid = trial_id(w.trial)
            stored = models.TrialModel.find_or_raise_by_id(tid, session)
            backend.check_trial_is_updatable(tid, stored.state)
            for p in w.params:  # Optuna's own write of each, its distribution check included
                set_param_without_commit(backend, session, tid, p.name, p.value,
                                         p.distribution, p.previous)
            if w.beat:
                _beat(session, models.TrialHeartbeatModel, tid)
            if w.attrs:
                _upsert(session, models.TrialUserAttributeModel, {"trial_id": tid}, w.attrs)
            if w.system_attrs:
                _upsert(session, models.TrialSystemAttributeModel, {"trial_id": tid},
                        w.system_attrs)
            if w.note is not None:
                _upsert(session, models.StudySystemAttributeModel,
                        {"study_id": study_id(w.trial.study)},
                        note_rows(tid, w.note))


def flush(writes: Sequence[AttrWrite]) -> None:
    """The trials' starts, each with the parameters this thread's unit of work holds for
    its trial (params_held), in one transaction (write_attrs): the way Optuna's
    _get_prepared_new_trial composes its _without_commit helpers, from the same pieces."""
    write_attrs([dataclasses.replace(w, params=[*w.params, *_take(w.trial)]) for w in writes])


def write_held(trial: BaseTrial) -> None:
    """The parameters held for `trial` (params_held), written alone: for a trial that ends
    before its start is written, or whose sampler must find them before the next trial's."""
    params = _take(trial)
    if params:
        write_attrs([AttrWrite(trial, {}, params=params)])


def _take(trial: BaseTrial) -> list[HeldParam]:
    if not isinstance(trial, optuna.Trial):  # a FixedTrial suggests nothing to hold
        return []
    unit = _unit_of(trial.study)
    return [] if unit is None else unit.take(trial_id(trial))


def insert_trials(session: Any, study_id: int, n: int,
                   attrs: Callable[[int], Mapping[str, Any]] | None, beat: bool
                   ) -> list[FrozenTrial]:
    """The rows Optuna's _create_new_trial writes for n trials, numbered as it numbers one:
    under its lock of the study's row, the first is inserted before its number is counted
    (the insert takes SQLite's write lock too), so no other writer's trial comes between."""
    models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
    trials = models.TrialModel.__table__
    now = datetime.datetime.now()  # local, as Optuna's; stored as naive UTC, as its column
    row = {"study_id": study_id, "state": TrialState.RUNNING,
           "datetime_start": now.astimezone(datetime.UTC).replace(tzinfo=None)}
    first_id = session.execute(sqlalchemy.insert(trials).values(**row, number=None)
                               ).inserted_primary_key[0]
    first = session.scalar(sqlalchemy.select(sqlalchemy.func.count()).select_from(trials).where(
        trials.c.study_id == study_id, trials.c.trial_id < first_id))
    session.execute(sqlalchemy.update(trials).where(trials.c.trial_id == first_id)
                    .values(number=first))
    if n > 1:
        session.execute(sqlalchemy.insert(trials),
                        [{**row, "number": first + i} for i in range(1, n)])
    ids = dict(session.execute(sqlalchemy.select(trials.c.number, trials.c.trial_id).where(
        trials.c.study_id == study_id, trials.c.trial_id >= first_id)).all())
    made = {number: dict(attrs(number)) if attrs else {} for number in range(first, first + n)}
    if beat:
        session.execute(sqlalchemy.insert(models.TrialHeartbeatModel.__table__),
                        [{"trial_id": ids[number]} for number in made])
    rows = [{"trial_id": ids[number], "key": k, "value_json": json.dumps(v)}
            for number, user in made.items() for k, v in user.items()]
    if rows:
        session.execute(sqlalchemy.insert(models.TrialUserAttributeModel.__table__), rows)
    return [FrozenTrial(number=number, state=TrialState.RUNNING, value=None, values=None,
                        datetime_start=now, datetime_complete=None, params={},
                        distributions={}, user_attrs=user, system_attrs={},
                        intermediate_values={}, trial_id=ids[number])
            for number, user in made.items()]
