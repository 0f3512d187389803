"""Storage calls that ride out a dropped connection, a database restart or a lock held past
SQLite's busy timeout.

`RetryingRDBStorage` is Optuna's RDBStorage with every storage call retried, with backoff,
while it fails for a transient cause (the server went away, refuses connections while it
restarts, or the database is locked; transient.py says which and holds the loop), for at
most a window of seconds (RETRY_WINDOW_S, or $MNIST_SEARCH_STORAGE_RETRY; 0 turns it off).
A warning says so when an outage starts and an info line when the storage answers again;
past the window the last error stands, as before.
Pooled connections are checked before use (pool_pre_ping), so the first call after a
restart does not fail on a connection the server has closed.

A storage that was never reached is not retried: a wrong host or a server that is down when
a command starts is an error at once, not a minute's wait.

Retrying is safe because each Optuna storage call is one transaction: one that failed was
rolled back, except when the connection dropped during its commit, so that the commit's
outcome is unknown. For the calls that change a trial that case is made harmless: a repeated
parameter is ignored by Optuna, attributes and intermediate values are overwritten with the
same value, and telling a trial that the lost commit already finished, with the same state
and values, is taken as done (it is told once). Only a failure that may have committed is
settled so: after a lock that was never taken, a finished trial or a taken study name is
the error it always was. A trial created by a commit whose answer was lost is found too:
in a storage of this package's workers (`beats_from_creation`, heartbeats on), a new
RUNNING trial gets its first heartbeat in the transaction that creates it, so when nobody
owns it, it goes stale and the next stale check fails it (Optuna 5's check skips trials
that never beat). Elsewhere (a user's own ask-and-tell loop) a trial that never beat is
never stale, as Optuna promises. An enqueued trial claimed (WAITING to RUNNING) by a
commit whose answer was lost is found RUNNING by the retry and taken as the caller's when
its claim was stamped during the call (_claimed_by_lost_commit).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import functools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from optuna.distributions import BaseDistribution
from optuna.exceptions import DuplicatedStudyError, UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from ..errors import StorageError, redact
from .faults import damaged_row, damaged_value
from .internals import DEFAULT_STUDY_NAME_PREFIX, is_not_found, models, scoped_session
from .internals import trial_id as id_of
from .rows import HeldParam, TrialWrites, claim_waiting, insert_trials, record_fail_reason
from .transient import RETRY_WINDOW_S, SettleCheck, retried_call

__all__ = ["RETRIED", "RetryingRDBStorage", "storage_seconds"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclasses.dataclass
class _Thread:
    """What one thread's calls on one storage carry from one to the next. The storage holds
    one per thread (a threading.local of its own), so its heartbeat thread never sees the
    trainer's, and two storages in one process never see each other's."""

    active: bool = False  # inside a retried call: a call it makes is not retried again
    lost_commit: bool = False  # the last retried call met a failure that may have committed
    seconds: float = 0.0  # spent in this storage's calls, a call inside another counted once
    writes: TrialWrites = dataclasses.field(default_factory=TrialWrites)  # the unit of work


def storage_seconds(storage: object) -> float:
    """Seconds this thread has spent in `storage`'s calls so far (0 for a storage that is
    no RetryingRDBStorage): where a worker's time goes (workers/ledger.py)."""
    return storage.thread().seconds if isinstance(storage, RetryingRDBStorage) else 0.0


class RetryingRDBStorage(RDBStorage):
    """Optuna's RDBStorage whose calls ride out transient faults (see the module's doc).
    Optuna wraps it in its usual cache; dashboards and `optuna` read the same database."""

    retry_window_s: float = RETRY_WINDOW_S
    reached: bool = False  # whether a call has succeeded: only then are faults retried
    outage_ended: float = 0.0  # time.monotonic() when the last outage ended (0: none yet)
    # a worker's storage: the trials it creates or claims beat from that moment (see the
    # module's doc); off, trials behave as Optuna's, whose never-beaten trials are never stale
    beats_from_creation: bool = False
    # RDBStorage's private methods overridden here: the one place outside internals.py that
    # names Optuna's private parts (tests/test_layout.py; tests/test_optuna_internals.py
    # checks that Optuna still defines and calls each)
    OPTUNA_OVERRIDES = ("_get_prepared_new_trial", "_get_stale_trial_ids", "_set_trial_param")

    def thread(self) -> _Thread:
        """This thread's state on this storage (made at its first call)."""
        local = self.__dict__.get("_threads")
        if local is None:  # setdefault: two threads' first calls keep one local
            local = self.__dict__.setdefault("_threads", threading.local())
        state: _Thread | None = getattr(local, "state", None)
        if state is None:
            state = local.state = _Thread()
        return state

    def trial_writes(self) -> TrialWrites:
        """This thread's unit of work (rows.TrialWrites): what it writes with its trials'
        creation and start."""
        return self.thread().writes

    def __getstate__(self) -> dict[Any, Any]:
        state: dict[Any, Any] = super().__getstate__()
        state.pop("_threads", None)  # a copy starts with no thread's state (nor can pickle it)
        return state

    def retrying(self, name: str, call: Callable[[], T], settled: SettleCheck | None = None) -> T:
        inside = self.thread()
        inside.lost_commit = False
        if inside.active:
            return call()
        window = self.retry_window_s if self.reached else 0.0
        inside.active = True
        start = time.perf_counter()
        try:
            result, retried, inside.lost_commit = retried_call(call, name, window, settled)
        except json.JSONDecodeError as exc:  # Optuna decodes every stored attribute
            raise StorageError(f"{redact(str(self.engine.url))}: {damaged_value(self.engine)} "
                               "is not valid JSON: the database was edited or damaged "
                               "outside Optuna; restore it from a copy (or delete that "
                               "row)") from exc
        except (LookupError, ValueError, TypeError, RecursionError) as exc:
            # Optuna's "no such study or trial" is an answer (a new study's name, or the best
            # trial before one is complete: every progress poll until then), and the search
            # for a row it cannot read back reads every row of every study
            found = None if is_not_found(exc) else damaged_row(self.engine)
            if found is None:
                raise
            raise StorageError(f"{redact(str(self.engine.url))}: {found}: the database was "
                               "edited or damaged outside Optuna; restore it from a copy (or "
                               "delete that row)") from exc
        finally:
            inside.active = False
            inside.seconds += time.perf_counter() - start
        self.reached = True
        if retried:
            self.outage_ended = time.monotonic()
        return result

    def _get_prepared_new_trial(self, study_id: int, template_trial: FrozenTrial | None,
                                session: Any) -> Any:
        """Optuna's new trial, with a heartbeat in the same transaction when the storage
        keeps heartbeats.

        A trial whose creating commit went through while its answer was lost (a dropped
        connection) has no owner: the retry creates another. Without a heartbeat Optuna
        would never count it stale and it would stay RUNNING forever; with this one it goes
        stale after the grace period and the next stale check fails it. An enqueued
        (WAITING) trial gets one too, refreshed when it is claimed (set_trial_state_values),
        so a claim whose worker dies before that refresh still goes stale.
        """
        trial = super()._get_prepared_new_trial(study_id, template_trial, session)
        if self.beats_from_creation and self.heartbeat_interval is not None and \
                trial.state in (TrialState.RUNNING, TrialState.WAITING):
            session.add(models.TrialHeartbeatModel(trial_id=trial.trial_id))
        attrs = self.trial_writes().attrs
        if attrs is not None and template_trial is None:  # a new RUNNING trial: see below
            for key, value in attrs(trial.number).items():
                session.add(models.TrialUserAttributeModel(trial_id=trial.trial_id, key=key,
                                                           value_json=json.dumps(value)))
        return trial

    def create_new_trials(self, study_id: int, n: int) -> list[FrozenTrial]:
        """n new RUNNING trials as _get_prepared_new_trial makes each (numbered in turn, a
        heartbeat, the attrs of this thread's TrialWrites.creating), in one transaction of a
        few statements for all of them: a claim of several trials holds the study lock that
        much less. What it wrote is kept for TrialWrites.serving_created."""
        writes = self.trial_writes()
        attrs = writes.attrs

        def create() -> list[FrozenTrial]:
            with scoped_session(self) as session:
                return insert_trials(session, study_id, n, attrs,
                                      beat=self.beats_from_creation
                                      and self.heartbeat_interval is not None)

        made = self.retrying("create_new_trials", create)
        writes.created = {id_of(t): copy.deepcopy(t) for t in made}
        return made

    def get_trial(self, trial_id: int) -> FrozenTrial:
        known = self.trial_writes().known(trial_id)
        if known is not None:
            return known
        return self.retrying("get_trial", lambda: RDBStorage.get_trial(self, trial_id))

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna's stale trials, each marked fail_reason "stale" before Optuna's stale
        check fails it: a process killed between that FAIL and its callback leaves no
        failed trial without its reason."""
        ids: list[int] = self.retrying("_get_stale_trial_ids",
                                       lambda: RDBStorage._get_stale_trial_ids(self, study_id))
        for tid in ids:
            record_fail_reason(self, tid, "stale")
        return ids

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        def settled(exc: BaseException) -> tuple[bool, Any]:
            # the lost commit did finish the trial, with these values: told once
            if isinstance(exc, UpdateFinishedTrialError) and state.is_finished():
                stored = self.get_trial(trial_id)
                same = None if values is None else [float(v) for v in values]
                return stored.state == state and stored.values == same, True
            return False, None

        began = datetime.datetime.now()
        if state == TrialState.RUNNING and values is None and self.beats_from_creation and \
                self.heartbeat_interval is not None:
            # a claimed WAITING trial beats at once, in the claim's own transaction: its
            # owner may die before its own first beat, and a trial that never beat is
            # never stale (Optuna 5)
            call: Callable[[], bool] = functools.partial(
                claim_waiting, self, trial_id, self.trial_writes().attrs)
        else:
            call = functools.partial(RDBStorage.set_trial_state_values, self, trial_id, state,
                                     values)
        done: bool = self.retrying("set_trial_state_values", call, settled)
        # A refused claim after an attempt that may have committed may be that commit's;
        # judged from the failures the retry loop met, not only those raised inside
        # Optuna's method, so that a fault raised around the call counts too
        if not done and state == TrialState.RUNNING and self.thread().lost_commit:
            done = self._claimed_by_lost_commit(trial_id, began)
        return done

    def _claimed_by_lost_commit(self, trial_id: int, began: datetime.datetime) -> bool:
        """After a claim (WAITING -> RUNNING) whose commit's answer was lost, the retry finds
        the trial RUNNING: it is ours when the claim that started it came during this call
        (Optuna stamps datetime_start at the claim). A claim by another process inside that
        moment cannot be told apart; mnist-search's workers claim under the study lock, so
        for them there is none."""
        stored = self.get_trial(trial_id)
        return stored.state == TrialState.RUNNING and stored.datetime_start is not None \
            and stored.datetime_start >= began

    def _set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                         distribution: BaseDistribution,
                         previous_distribution: BaseDistribution | None) -> None:
        """Optuna's write of one suggested parameter (a transaction each), or, inside
        rows.params_held, the parameter held in this thread's unit of work, to be written
        with the trial's start."""
        if self.trial_writes().hold(trial_id, HeldParam(
                param_name, param_value_internal, distribution, previous_distribution)):
            return
        self.retrying("_set_trial_param", lambda: RDBStorage._set_trial_param(
            self, trial_id, param_name, param_value_internal, distribution,
            previous_distribution))

    def create_new_study(self, directions: Sequence[Any], study_name: str | None = None
                         ) -> int:
        if study_name is None:
            # Named here, as Optuna would name it, so that a retry after a lost commit meets
            # the study that commit created (DuplicatedStudyError) instead of a second one.
            study_name = DEFAULT_STUDY_NAME_PREFIX + str(uuid.uuid4())

        def settled(exc: BaseException) -> tuple[bool, Any]:
            if isinstance(exc, DuplicatedStudyError) and study_name is not None:
                return True, self.get_study_id_from_name(study_name)
            return False, None

        return self.retrying("create_new_study", lambda: RDBStorage.create_new_study(
            self, directions, study_name), settled)


def _retried(name: str) -> Callable[..., Any]:
    @functools.wraps(getattr(RDBStorage, name))
    def call(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self.retrying(name, lambda: getattr(RDBStorage, name)(self, *args, **kwargs))

    return call


# Every call that reaches the database, Optuna's cache's private ones included (a test
# checks that the list covers RDBStorage's methods).
RETRIED = ("delete_study", "set_study_user_attr", "set_study_system_attr",
           "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
           "get_study_user_attrs", "get_study_system_attrs", "get_trial_user_attrs",
           "get_trial_system_attrs", "get_all_studies", "create_new_trial", "_create_new_trial",
           "set_trial_param", "_set_trial_param", "get_trial_param",
           "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
           "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials",
           "_get_trials", "get_best_trial", "_get_best_trial_id", "record_heartbeat",
           "get_n_trials", "get_trial_number_from_id",
           "get_trial_params")
for _name in RETRIED:  # a name a new Optuna drops fails here, not silently unretried
    getattr(RDBStorage, _name)
    if _name not in RetryingRDBStorage.__dict__:  # (get_trial retries in its own way)
        setattr(RetryingRDBStorage, _name, _retried(_name))
