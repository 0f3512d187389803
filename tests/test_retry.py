"""Storage calls retried through transient faults (storage/retry.py, storage/transient.py), on
a real SQLite storage: what counts as transient, a lost commit told once, a never-reached
storage not retried, and the window's setting. The restart of a real PostgreSQL server
mid-run is in test_postgres.py, SQLite locked past its busy timeout in test_storage_faults.py."""

from __future__ import annotations

import inspect
import logging
import sqlite3
import threading
import time

import optuna
import pytest
import sqlalchemy.exc
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from mnist_search.errors import StorageError
from mnist_search.storage import retry, transient
from mnist_search.storage.connect import make_storage
from mnist_search.storage.retry import RETRIED, RetryingRDBStorage
from mnist_search.storage.transient import is_transient

NOT_DATABASE_CALLS = {
    "get_heartbeat_interval", "get_heartbeat_stale_trial_callback", "get_failed_trial_callback",
    "remove_session", "upgrade", "get_current_version", "get_head_version", "get_all_versions",
    "check_table_schema_compatibility", "is_heartbeat_enabled", "check_trial_is_updatable",
    "create_new_study", "set_trial_state_values"}  # the last two have their own retries


def dropped(text: str = "server closed the connection unexpectedly") -> Exception:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception(text))


def test_every_database_call_of_optunas_storage_is_retried():
    public = {n for n, m in inspect.getmembers(RDBStorage, inspect.isfunction)
              if not n.startswith("_")}
    assert public - NOT_DATABASE_CALLS <= set(RETRIED)
    for name in [*RETRIED, "create_new_study", "set_trial_state_values",
                 "_get_stale_trial_ids"]:
        if hasattr(RDBStorage, name):
            assert getattr(RetryingRDBStorage, name) is not getattr(RDBStorage, name), name


@pytest.mark.parametrize("exc,transient", [
    (dropped(), True),
    (dropped("terminating connection due to administrator command"), True),
    (dropped("connection refused"), True),
    (dropped("database is locked"), True),
    (sqlalchemy.exc.InvalidatePoolError(), True),
    (dropped("database or disk is full"), False),
    (dropped("attempt to write a readonly database"), False),
    (dropped('password authentication failed for user "ms"'), False),
    (sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")), False),
    (ValueError("connection refused"), True),  # a driver's own error, by its message
    (ValueError("bad value"), False),
])
def test_what_counts_as_transient(exc, transient):
    wrapped = optuna.exceptions.StorageInternalError("An exception is raised during the commit")
    wrapped.__cause__ = exc
    assert is_transient(exc) is transient
    assert is_transient(wrapped) is transient  # through Optuna's wrapper too


@pytest.fixture()
def storage(tmp_path):
    s = make_storage(f"sqlite:///{tmp_path / 'r.db'}")
    assert isinstance(s, RetryingRDBStorage)
    return s


def flaky(monkeypatch, name: str, failures: int, after: bool = False) -> list[int]:
    """RDBStorage.name fails `failures` times with a dropped connection (after doing its work
    when `after`, as a commit whose answer was lost); returns the call count."""
    calls = [0]
    original = getattr(RDBStorage, name)

    def call(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] <= failures:
            if after:
                original(self, *args, **kwargs)
            raise optuna.exceptions.StorageInternalError("commit failed") from dropped()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RDBStorage, name, call)
    monkeypatch.setattr(transient, "FIRST_DELAY_S", 0.01)
    return calls


def test_a_reached_storage_retries_until_the_fault_passes(storage, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="mnist_search")
    study = optuna.create_study(storage=storage, study_name="s")
    calls = flaky(monkeypatch, "_get_trials", failures=3)  # what Optuna's cache calls
    assert study.get_trials() == []
    assert calls[0] == 4
    assert "retrying for up to 60 s" in caplog.text
    assert "storage answers again" in caplog.text
    assert storage.outage_ended > 0


def test_a_trial_told_by_a_lost_commit_is_told_once(storage, monkeypatch):
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    calls = flaky(monkeypatch, "set_trial_state_values", failures=1, after=True)
    study.tell(trial, 0.5)  # the first commit landed, its answer was lost; the retry sees it
    assert calls[0] == 2
    [stored] = study.get_trials()
    assert stored.state == TrialState.COMPLETE and stored.value == 0.5


def test_a_lost_commit_is_still_recognised_when_the_storage_flaps(storage, monkeypatch):
    """The check that the lost commit landed fails once too: retried, still told once."""
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    tells = flaky(monkeypatch, "set_trial_state_values", failures=1, after=True)
    original, checks = RDBStorage.get_trial, []

    def get_trial(self, trial_id):
        if tells[0] >= 2:  # after the retried tell: Optuna's own check that it is finished
            checks.append(trial_id)  # (1st), then the retry's check that it landed (2nd)
            if len(checks) == 2:
                raise optuna.exceptions.StorageInternalError("x") from dropped()
        return original(self, trial_id)

    monkeypatch.setattr(RDBStorage, "get_trial", get_trial)
    study.tell(trial, 0.5)
    assert tells[0] == 3 and len(checks) >= 2  # told again after the failed check
    [stored] = study.get_trials()
    assert stored.state == TrialState.COMPLETE and stored.value == 0.5


def test_a_storage_never_reached_is_not_retried(tmp_path, monkeypatch):
    storage = make_storage(f"sqlite:///{tmp_path / 'r.db'}")
    storage.reached = False
    calls = flaky(monkeypatch, "get_all_studies", failures=1)
    with pytest.raises(optuna.exceptions.StorageInternalError):
        storage.get_all_studies()
    assert calls[0] == 1


def test_past_the_window_the_error_stands(storage, monkeypatch, caplog):
    optuna.create_study(storage=storage, study_name="s")
    storage.retry_window_s = 0.3
    calls = flaky(monkeypatch, "get_all_studies", failures=10_000)
    start = time.monotonic()
    with pytest.raises(optuna.exceptions.StorageInternalError):
        storage.get_all_studies()
    assert 0.3 <= time.monotonic() - start < 3
    assert calls[0] > 2
    assert "giving up" in caplog.text


def test_a_permanent_fault_is_not_retried(storage, monkeypatch):
    optuna.create_study(storage=storage, study_name="s")
    calls = [0]

    def full(self, *args, **kwargs):
        calls[0] += 1
        raise optuna.exceptions.StorageInternalError("x") from dropped("database or disk is full")

    monkeypatch.setattr(RDBStorage, "get_all_studies", full)
    with pytest.raises(optuna.exceptions.StorageInternalError):
        storage.get_all_studies()
    assert calls[0] == 1


@pytest.mark.parametrize("raw,window", [("", 60.0), ("0", 0.0), ("2.5", 2.5)])
def test_the_window_is_set_by_the_environment(monkeypatch, raw, window):
    monkeypatch.setenv("MNIST_SEARCH_STORAGE_RETRY", raw)
    assert transient.retry_window() == window


@pytest.mark.parametrize("raw", ["soon", "-1", "nan"])
def test_a_bad_window_is_one_clear_error(monkeypatch, raw):
    monkeypatch.setenv("MNIST_SEARCH_STORAGE_RETRY", raw)
    with pytest.raises(StorageError, match="MNIST_SEARCH_STORAGE_RETRY.*expected seconds"):
        transient.retry_window()


def test_stale_trials_wait_a_grace_period_after_an_outage(tmp_path):
    """Heartbeats went unrecorded while the storage was away: a trial that looks stale
    right after may be alive, so the claim step leaves it for one grace period."""
    from mnist_search.search.queue import just_recovered

    storage = make_storage(f"sqlite:///{tmp_path / 'r.db'}", heartbeat_interval=1,
                           grace_period=2)
    assert not just_recovered(storage)  # no outage yet
    storage.outage_ended = time.monotonic()
    assert just_recovered(storage)
    storage.outage_ended = time.monotonic() - 2.5
    assert not just_recovered(storage)


@pytest.fixture()
def locked_storage(tmp_path, monkeypatch):
    """A reached storage whose busy timeout is short, and a way to hold SQLite's write lock
    from another connection for a while (as another process would)."""
    monkeypatch.setenv("MNIST_SEARCH_SQLITE_TIMEOUT", "0.1")
    monkeypatch.setattr(transient, "FIRST_DELAY_S", 0.05)
    path = tmp_path / "l.db"
    s = make_storage(f"sqlite:///{path}", reached=True)

    def hold(seconds: float, then: str = "", params: tuple = ()) -> threading.Thread:
        ready = threading.Event()

        def run() -> None:
            con = sqlite3.connect(str(path), isolation_level=None)
            con.execute("BEGIN EXCLUSIVE")
            ready.set()
            time.sleep(seconds)
            for statement in filter(None, then.split(";")):
                con.execute(statement, params[:statement.count("?")])
            con.execute("COMMIT")
            con.close()

        thread = threading.Thread(target=run)
        thread.start()
        ready.wait()
        return thread

    return s, hold


def test_a_taken_study_name_stays_an_error_after_a_lock(locked_storage):
    """A lock that was never taken committed nothing: the retry's DuplicatedStudyError is
    the truth, not a sign that a lost commit created the study."""
    s, hold = locked_storage
    optuna.create_study(storage=s, study_name="taken")
    thread = hold(0.6)
    with pytest.raises(optuna.exceptions.DuplicatedStudyError):
        s.create_new_study([optuna.study.StudyDirection.MINIMIZE], "taken")
    thread.join()


def test_a_tell_after_a_lock_never_drops_its_values(locked_storage):
    """Another process finishes the trial (0.3) while it holds the lock our tell (0.7) waits
    for. Our first attempt committed nothing, so the retry's UpdateFinishedTrialError is
    the truth: it is raised, not taken as our own lost commit."""
    s, hold = locked_storage
    study = optuna.create_study(storage=s, study_name="s")
    trial = study.ask()
    thread = hold(0.6, "UPDATE trials SET state = 'COMPLETE', datetime_complete = "
                       "CURRENT_TIMESTAMP WHERE trial_id = ?;INSERT INTO trial_values "
                       "(trial_id, objective, value, value_type) VALUES (?, 0, 0.3, 'FINITE')",
                  (trial._trial_id, trial._trial_id))
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        s.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [0.7])
    thread.join()
    assert study.get_trials()[0].value == 0.3


def test_a_lost_commit_is_settled_only_by_the_values_it_was_told(storage, monkeypatch):
    """The first tell fails with a dropped connection and committed nothing; meanwhile the
    trial was finished with other values. The retry's error stands: nothing is dropped."""
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    RDBStorage.set_trial_state_values(storage, trial._trial_id, TrialState.COMPLETE, [0.3])
    flaky(monkeypatch, "set_trial_state_values", failures=1)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [0.5])
    assert study.get_trials()[0].value == 0.3


def test_may_have_committed():
    assert transient.may_have_committed(dropped())
    assert transient.may_have_committed(sqlalchemy.exc.InvalidatePoolError())
    assert not transient.may_have_committed(dropped("database is locked"))
    assert not transient.may_have_committed(dropped("connection refused"))


class FakeClock:
    """time.monotonic and time.sleep for transient.py: sleeping advances the clock."""

    def __init__(self) -> None:
        self.now, self.sleeps = 1000.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def failing(times: int, text: str = "server closed the connection unexpectedly"):
    calls = [0]

    def call():
        calls[0] += 1
        if calls[0] <= times:
            raise optuna.exceptions.StorageInternalError("x") from dropped(text)
        return "done"

    return call, calls


def test_the_backoff_doubles_up_to_its_cap(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(transient.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(transient.time, "sleep", clock.sleep)
    call, calls = failing(8)
    assert transient.with_retries(call, "test", 600.0) == "done" and calls[0] == 9
    assert clock.sleeps == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_the_last_sleep_ends_at_the_window(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(transient.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(transient.time, "sleep", clock.sleep)
    call, _ = failing(100)
    with pytest.raises(optuna.exceptions.StorageInternalError):
        transient.with_retries(call, "test", 3.0)
    assert sum(clock.sleeps) == pytest.approx(3.0)  # 0.25 + 0.5 + 1 + 1.25, not + 2
    assert clock.sleeps[-1] == pytest.approx(1.25)


def test_a_permanent_cause_beats_a_transient_one_in_the_same_chain():
    both = optuna.exceptions.StorageInternalError("x")
    both.__cause__ = dropped("connection refused")
    both.__cause__.__context__ = dropped("database or disk is full")
    assert not is_transient(both)


def test_an_invalidated_connection_is_transient_whatever_its_text():
    exc = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("something odd"),
                                          connection_invalidated=True)
    assert is_transient(exc)
    assert not is_transient(sqlalchemy.exc.OperationalError("SELECT 1", {},
                                                            Exception("something odd")))


def test_a_study_created_by_a_lost_commit_is_that_study(storage, monkeypatch):
    """The first create committed, then its answer was lost: the retry's DuplicatedStudyError
    means our own study exists, and its id is the answer."""
    storage.get_all_studies()  # reached: faults are retried from now on
    flaky(monkeypatch, "create_new_study", failures=1, after=True)
    sid = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "lost")
    assert sid == RDBStorage.get_study_id_from_name(storage, "lost")


def test_a_nameless_study_created_by_a_lost_commit_is_created_once(storage, monkeypatch):
    """Found by Optuna's own storage tests with faults after the commit: the retry of a
    create without a name used to make a second study under a new generated name."""
    storage.get_all_studies()
    flaky(monkeypatch, "create_new_study", failures=1, after=True)
    sid = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE])
    assert [s._study_id for s in RDBStorage.get_all_studies(storage)] == [sid]


@pytest.mark.slow  # waits out a heartbeat's grace period
def test_a_trial_created_by_a_lost_commit_goes_stale_and_is_failed(tmp_path, monkeypatch):
    """The ask's commit landed but its answer was lost: the retry creates a second trial,
    and the first, owned by nobody, must not stay RUNNING forever. It was created with a
    heartbeat, so the stale check fails it. An enqueued trial has one too (its claim
    refreshes it)."""
    storage = make_storage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_interval=1,
                           beats_from_creation=True,
                           grace_period=1, reached=True)
    study = optuna.create_study(storage=storage, study_name="s")
    study.enqueue_trial({"x": 1.0})
    [waiting] = study.get_trials()
    assert waiting.state == TrialState.WAITING
    flaky(monkeypatch, "_create_new_trial", failures=1, after=True)
    storage.create_new_trial(study._study_id)  # as an ask does: the first commit is lost
    monkeypatch.undo()
    running = [t for t in study.get_trials() if t.state == TrialState.RUNNING]
    assert len(running) == 2  # the orphan and the retry's trial
    with storage.engine.connect() as conn:
        beats = {r[0] for r in conn.execute(sqlalchemy.text(
            "SELECT trial_id FROM trial_heartbeats"))}
    assert beats == {t._trial_id for t in study.get_trials()}  # each created with a beat
    time.sleep(2.5)
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        optuna.storages.fail_stale_trials(study)
    states = sorted(t.state.name for t in study.get_trials())
    assert states == ["FAIL", "FAIL", "WAITING"]  # nobody beat either: both stale
    assert [t.user_attrs.get("fail_reason") for t in study.get_trials()
            if t.state == TrialState.FAIL] == ["stale", "stale"]  # marked before the FAIL


@pytest.mark.slow  # waits out a heartbeat's grace period
def test_a_claimed_trial_whose_worker_dies_at_once_goes_stale(tmp_path):
    """An enqueued trial claimed by a worker killed before its own first heartbeat: the
    claim itself beat, so the trial goes stale and is failed (and re-run by the callback,
    without the failed one's fail_reason), instead of staying RUNNING forever."""
    from mnist_search.search.reap import StaleTrialCallback

    storage = make_storage(f"sqlite:///{tmp_path / 'c.db'}", heartbeat_interval=1,
                           beats_from_creation=True,
                           grace_period=1, retry_callback=StaleTrialCallback(max_retry=1))
    study = optuna.create_study(study_name="s", storage=storage)
    study.enqueue_trial({"x": 1.0}, user_attrs={"label": "ref"})
    time.sleep(1.5)  # enqueued a while ago: its creation beat is old
    claimed = study.ask()  # the claim; then the worker is killed
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        optuna.storages.fail_stale_trials(study)
    assert study.get_trials()[claimed.number].state == TrialState.RUNNING  # just claimed
    time.sleep(2.5)
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        optuna.storages.fail_stale_trials(study)
    failed, again = study.get_trials()
    assert failed.state == TrialState.FAIL and failed.user_attrs["fail_reason"] == "stale"
    assert again.state == TrialState.WAITING and again.user_attrs["label"] == "ref"
    assert "fail_reason" not in again.user_attrs


@pytest.mark.slow  # waits out a heartbeat's grace period, twice
@pytest.mark.parametrize("earlier_run", [True, False])
def test_a_label_that_died_in_an_earlier_run_is_taken_over_past_its_retries(tmp_path,
                                                                           earlier_run):
    """A label killed in one run (retried once) whose re-run dies in the next run, with its
    death found by a later run's stale check: that run takes it over, as it takes over a
    label that had failed before it began (open_study's enqueue_pending); a label whose
    deaths that run saw both happen is retried only max_retry times."""
    import datetime as dt

    from mnist_search.search.reap import StaleTrialCallback

    url = f"sqlite:///{tmp_path / 'c.db'}"

    def storage(since: dt.datetime | None) -> RDBStorage:
        return make_storage(url, heartbeat_interval=1, grace_period=1, beats_from_creation=True,
                            retry_callback=StaleTrialCallback(max_retry=1, since=since))

    study = optuna.create_study(study_name="s", storage=storage(None))
    study.enqueue_trial({"x": 1.0}, user_attrs={"label": "ref"})
    study.ask()  # claimed; its worker is killed
    time.sleep(2.5)
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        optuna.storages.fail_stale_trials(study)  # failed, re-run once: WAITING
    study.ask()  # the re-run claimed, and its run killed too
    time.sleep(2.5)
    began = dt.datetime.now() if earlier_run else dt.datetime.now() - dt.timedelta(seconds=60)
    later = optuna.load_study(study_name="s", storage=storage(began))
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        optuna.storages.fail_stale_trials(later)
    states = [t.state for t in later.get_trials()]
    assert states[:2] == [TrialState.FAIL, TrialState.FAIL]
    if earlier_run:
        assert states[2:] == [TrialState.WAITING]
        again = later.get_trials()[2]
        assert again.user_attrs["label"] == "ref"
        assert again.system_attrs["fixed_params"] == {"x": 1.0}
        assert again.system_attrs["retry_history"] == [0, 1]  # its history kept
    else:  # both deaths in this run: past max_retry
        assert states[2:] == []


def test_a_claim_whose_commit_answer_was_lost_is_still_ours(storage, monkeypatch):
    """Claiming an enqueued trial (WAITING -> RUNNING) commits, the answer is lost, and the
    retry finds the trial RUNNING: the ask returns that trial, instead of leaving it
    RUNNING with no owner and creating another."""
    study = optuna.create_study(storage=storage, study_name="s")
    study.enqueue_trial({"x": 1.0})
    calls = flaky(monkeypatch, "set_trial_state_values", failures=1, after=True)
    trial = study.ask()
    assert calls[0] == 2
    assert trial.number == 0 and len(study.get_trials()) == 1
    study.tell(trial, 1.0)
    assert study.get_trials()[0].state == TrialState.COMPLETE


def test_a_claim_is_recognised_when_the_lost_answer_fails_around_the_call(storage,
                                                                          monkeypatch):
    """The claim's commit went through and the failure came after Optuna's method had
    returned (raised by whatever wraps the call, as Optuna's own storage tests' fault
    injection does): the retry loop saw a failure that may have committed, so the refused
    retry is checked against the stored claim, and the ask returns the claimed trial
    instead of creating another (7 trials where Optuna's heartbeat test expects 6)."""
    monkeypatch.setattr(transient, "FIRST_DELAY_S", 0.01)
    study = optuna.create_study(storage=storage, study_name="s")
    study.enqueue_trial({"x": 1.0})
    original, faults = RetryingRDBStorage.retrying, []

    def retrying(self, name, call, settled=None):
        def around():
            result = call()
            if name == "set_trial_state_values" and not faults:
                faults.append(name)
                raise optuna.exceptions.StorageInternalError("commit failed") from dropped()
            return result
        return original(self, name, around, settled)

    monkeypatch.setattr(RetryingRDBStorage, "retrying", retrying)
    trial = study.ask()
    assert faults and trial.number == 0 and len(study.get_trials()) == 1


@pytest.mark.slow  # waits out a heartbeat's grace period
def test_trials_created_together_by_a_lost_commit_are_numbered_once_and_go_stale(
        tmp_path, monkeypatch):
    """A claim's batch whose commit landed but whose answer was lost: the retry creates
    another batch, numbered after it; the lost one, owned by nobody, has its heartbeats and
    seeds, so it goes stale like a lone orphan."""
    import contextlib

    storage = make_storage(f"sqlite:///{tmp_path / 'b.db'}", heartbeat_interval=1,
                           beats_from_creation=True,
                           grace_period=1, reached=True)
    study = optuna.create_study(storage=storage, study_name="s")
    real, commits = retry.scoped_session, [0]

    @contextlib.contextmanager
    def answer_lost(*args, **kwargs):
        with real(*args, **kwargs) as session:
            yield session
        commits[0] += 1
        if commits[0] == 1:  # committed, then the connection dropped
            raise optuna.exceptions.StorageInternalError("commit failed") from dropped()

    monkeypatch.setattr(retry, "scoped_session", answer_lost)
    monkeypatch.setattr(transient, "FIRST_DELAY_S", 0.01)
    with storage.trial_writes().creating(lambda number: {"seed": 100 + number}):
        made = storage.create_new_trials(study._study_id, 3)
    monkeypatch.undo()
    assert commits[0] == 2 and [t.number for t in made] == [3, 4, 5]
    stored = study.get_trials()
    assert [t.number for t in stored] == list(range(6))
    assert [t.user_attrs["seed"] for t in stored] == [100 + n for n in range(6)]
    with storage.engine.connect() as conn:
        beats = {r[0] for r in conn.execute(sqlalchemy.text(
            "SELECT trial_id FROM trial_heartbeats"))}
    assert beats == {t._trial_id for t in stored}
    time.sleep(2.5)
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        optuna.storages.fail_stale_trials(study)
    assert {t.state for t in study.get_trials()} == {TrialState.FAIL}


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_sampled_trial_is_created_with_its_seed_worker_and_heartbeat_in_one_commit(tmp_path):
    """No moment in which it exists without them; an enqueued trial gets them at its claim."""
    from mnist_search.search.lifecycle import ask_trial, create_trial, trial_seed
    from mnist_search.storage.internals import trial_id, trial_of, trials_with_heartbeat

    storage = make_storage(f"sqlite:///{tmp_path / 'c.db'}", heartbeat_interval=10,
                           beats_from_creation=True)
    study = optuna.create_study(storage=storage)
    study.enqueue_trial({}, user_attrs={"label": "ref"})
    writes, commits = [0], []  # statements that write in the open transaction; per commit

    def statement(_conn, _cursor, sql, *_args):
        writes[0] += sql.lstrip().split(" ", 1)[0].upper() in ("INSERT", "UPDATE", "DELETE")

    def commit(_conn):
        commits.append(writes[0])
        writes[0] = 0

    sqlalchemy.event.listen(storage.engine, "before_cursor_execute", statement)
    sqlalchemy.event.listen(storage.engine, "commit", commit)
    made = create_trial(study, storage, 5, 10)  # what a claim does with an empty queue
    assert made is not None and len([n for n in commits if n]) == 1  # one wrote it all
    sampled = trial_of(study, made)
    popped = ask_trial(study, storage, 5, 10, queued=True)
    assert (popped.number, sampled.number) == (0, 1)
    for t in (sampled, popped):
        stored = storage.get_trial(trial_id(t))
        assert stored.user_attrs["seed"] == trial_seed(5, t.number)
        assert stored.user_attrs["heartbeat_s"] == 10 and ":" in stored.user_attrs["worker"]
    assert popped.user_attrs["label"] == "ref"
    assert trials_with_heartbeat(storage) == {trial_id(sampled), trial_id(popped)}


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_workers_claim_answers_as_optunas_own(tmp_path):
    """A worker's storage claims enqueued trials in its own transaction (rows.claim_waiting),
    answering as Optuna's set_trial_state_values does: a WAITING trial is taken and stamped,
    a RUNNING one is refused, a finished one raises; the rows read back as Optuna's."""
    stores = {kind: make_storage(f"sqlite:///{tmp_path / kind}.db", heartbeat_interval=10,
                                 beats_from_creation=kind == "worker")
              for kind in ("worker", "optuna")}
    answers = {}
    for kind, storage in stores.items():
        study = optuna.create_study(storage=storage, study_name="s")
        for x in (1.0, 2.0):
            study.enqueue_trial({"x": x})
        waiting, done = [t._trial_id for t in study.get_trials()]
        storage.set_trial_state_values(done, TrialState.RUNNING)
        storage.set_trial_state_values(done, TrialState.COMPLETE, [1.0])
        claimed = storage.set_trial_state_values(waiting, TrialState.RUNNING)
        again = storage.set_trial_state_values(waiting, TrialState.RUNNING)
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            storage.set_trial_state_values(done, TrialState.RUNNING)
        stored = storage.get_trial(waiting)
        assert stored.datetime_start is not None and stored.datetime_complete is None
        answers[kind] = (claimed, again, stored.state, stored.params,
                         stored.system_attrs["fixed_params"])
    assert answers["worker"] == answers["optuna"] == (
        True, False, TrialState.RUNNING, {}, {"x": 1.0})


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_worker_stopped_right_after_claiming_leaves_a_trial_that_beat(tmp_path,
                                                                        monkeypatch):
    """The claim of an enqueued trial commits its first beat, its worker and its heartbeat
    interval with the claim itself: a worker SIGKILLed the moment the claim commits leaves a
    trial that goes stale (and that a later run waits for), never a RUNNING one that never
    beat, which Optuna never fails and whose label would never run again."""
    from mnist_search.search.lifecycle import ask_trial
    from mnist_search.storage.internals import trials_with_heartbeat

    storage = make_storage(f"sqlite:///{tmp_path / 'k.db'}", heartbeat_interval=10,
                           beats_from_creation=True)
    study = optuna.create_study(storage=storage, study_name="s")
    study.enqueue_trial({}, user_attrs={"label": "ref"})
    original = RetryingRDBStorage.retrying

    class Killed(BaseException):
        pass

    def retrying(self, name, call, settled=None):
        result = original(self, name, call, settled)
        if name == "set_trial_state_values":
            raise Killed  # the process ends the moment the claim has committed
        return result

    monkeypatch.setattr(RetryingRDBStorage, "retrying", retrying)
    with pytest.raises(Killed):
        ask_trial(study, storage, 5, 10)
    monkeypatch.undo()
    stored = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'k.db'}"
                               ).get_trials()[0]
    assert stored.state == TrialState.RUNNING and stored.user_attrs["label"] == "ref"
    assert stored.user_attrs["heartbeat_s"] == 10 and ":" in stored.user_attrs["worker"]
    assert trials_with_heartbeat(storage) == {stored._trial_id}


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
@pytest.mark.slow  # waits out a heartbeat's grace period
def test_a_users_own_ask_that_never_beat_is_never_stale(tmp_path):
    """Optuna's contract, which a user's ask-and-tell loop on our storage relies on while it
    trains: a trial that never beat is never failed as stale, enqueued or new. Only a
    worker's storage (beats_from_creation) beats its trials from the moment they exist."""
    storage = make_storage(f"sqlite:///{tmp_path / 'u.db'}", heartbeat_interval=1,
                           grace_period=1)
    study = optuna.create_study(storage=storage)
    study.enqueue_trial({"x": 1.0})
    popped, new = study.ask(), study.ask()
    time.sleep(2.5)
    optuna.storages.fail_stale_trials(study)
    states = [t.state for t in study.get_trials()]
    assert states == [optuna.trial.TrialState.RUNNING] * 2, (popped.number, new.number)
    storage.record_heartbeat(new._trial_id)  # once it beats, it can go stale
    time.sleep(2.5)
    optuna.storages.fail_stale_trials(study)
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.RUNNING,
                                                     optuna.trial.TrialState.FAIL]


def test_only_a_claim_after_a_fault_is_checked_as_a_lost_commit(tmp_path, monkeypatch):
    """Every refused claim checked as a lost commit: a plain refusal (another worker took the
    trial first, no fault met) is answered at once, never read back and judged ours."""
    storage = make_storage(f"sqlite:///{tmp_path / 'r.db'}", reached=True)
    study = optuna.create_study(storage=storage, study_name="s")
    study.enqueue_trial({})
    tid = study.get_trials()[0]._trial_id
    assert storage.set_trial_state_values(tid, optuna.trial.TrialState.RUNNING)
    checked = []
    monkeypatch.setattr(RetryingRDBStorage, "_claimed_by_lost_commit",
                        lambda self, *a: checked.append(a) or True)
    assert not storage.set_trial_state_values(tid, optuna.trial.TrialState.RUNNING)
    assert checked == []
