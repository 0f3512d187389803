"""Storage errors in one line: the chain of causes behind Optuna's wrapper
(StorageInternalError), the one that says something, and what to do about it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ..errors import StorageError, redact

# sqlalchemy itself (0.3 s) is imported only where a damaged row is read: `run` imports this
# module (through connect) before it starts its workers, and each tenth of a second here was
# a tenth later that the workers started
if TYPE_CHECKING:
    import sqlalchemy

__all__ = ["cause_chain", "cause_text", "damaged_row", "damaged_value", "describe", "explain",
           "is_storage_fault"]


def cause_chain(exc: BaseException) -> list[BaseException]:
    """exc, then what caused it (__cause__, else __context__), down to the error that
    started it; each error once, so a cycle in the chain ends it."""
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in out):
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def cause_text(exc: BaseException) -> str:
    """An error's text on one line, without SQLAlchemy's link to its docs."""
    return " ".join(str(exc).split()).split(" (Background on this error")[0]


def _telling_cause(exc: BaseException) -> BaseException:
    """The deepest error in the chain that says something (SQLAlchemy's pool errors after a
    dropped connection have no text; the driver's error beside them does)."""
    chain = cause_chain(exc)
    return next((e for e in reversed(chain) if str(e).strip(" ()")), chain[-1])


_ADVICE = (
    ("locked", "another process holds the database lock; retry, or use fewer workers"),
    ("readonly", "the database file or its directory is read-only; fix permissions"),
    ("read-only", "the database file or its directory is read-only; fix permissions"),
    ("disk is full", "free disk space; finished trials are kept, and trials left RUNNING "
                     "are failed and re-run by the next run (or: mnist-search reap STUDY)"),
    ("disk i/o error", "check the disk (full, or a file size limit)"),
    ("file is not a database", "the file is not an SQLite database"),
    ("storage upgrade", "back up the file, then run: optuna storage upgrade --storage URL"),
    ("pip install -u optuna", "this database was written by a newer Optuna: upgrade optuna"),
    ("connection refused", "is the database server running and reachable?"),
    ("terminating connection", "the server went away for longer than the retry window "
     "($MNIST_SEARCH_STORAGE_RETRY, 60 s); run again to resume"),
    ("server closed the connection", "the server went away for longer than the retry "
     "window ($MNIST_SEARCH_STORAGE_RETRY, 60 s); run again to resume"),
    ("could not translate host", "check the host name in the URL"),
    ("password authentication failed", "check the user and password"),
    ("does not exist", "create the database first"),
)


def is_storage_fault(exc: BaseException) -> bool:
    """Did this come from the database layer (Optuna's wrapper, SQLAlchemy, a driver)?"""
    import sys

    cause = cause_chain(exc)[-1]
    optuna_exc, sa_exc = sys.modules.get("optuna.exceptions"), sys.modules.get("sqlalchemy.exc")
    chain = {type(exc), type(cause)}
    return any(
        (optuna_exc is not None and issubclass(t, optuna_exc.StorageInternalError))
        or (sa_exc is not None and issubclass(t, sa_exc.SQLAlchemyError))
        or t.__module__.split(".")[0] in ("sqlite3", "psycopg", "psycopg2")
        for t in chain) or "storage upgrade" in str(cause) or "pip install -U optuna" in str(cause)


def describe(exc: BaseException, url: str) -> str:
    """One line for any error a worker ends on: storage faults get their real cause."""
    if isinstance(exc, StorageError):
        return redact(str(exc))
    if is_storage_fault(exc):
        return explain(exc, url)
    return redact(f"{type(exc).__name__}: {exc}")


def explain(exc: BaseException, url: str) -> str:
    """One line: the storage, the real cause (not Optuna's wrapper), what to do."""
    cause = _telling_cause(exc)
    text = cause_text(cause) or type(cause).__name__
    if len(text) > 300:
        text = text[:300] + "..."
    advice = next((a for key, a in _ADVICE if key in text.lower()), "")
    return redact(f"storage {url}: {type(cause).__name__}: {text}" + (
        f" ({advice})" if advice else ""))


# Naming the stored attribute that fails to decode, as a user finds it, for the one-line
# error a damaged or hand-edited database gets instead of Optuna's JSONDecodeError.
_ATTRIBUTE_TABLES = (("trial_user_attributes", "trial", "user attribute"),
                     ("trial_system_attributes", "trial", "system attribute"),
                     ("study_user_attributes", "study", "user attribute"),
                     ("study_system_attributes", "study", "system attribute"))


def damaged_value(engine: sqlalchemy.engine.Engine) -> str:
    """Which stored attribute fails to decode, named as a user finds it: 'trial 3 of study
    "notebook", its user attribute "config"' (or 'a stored value' if none is found)."""
    import sqlalchemy

    with engine.connect() as conn:
        for table, owner, kind in _ATTRIBUTE_TABLES:
            rows = conn.execute(sqlalchemy.text(
                f"SELECT {owner}_id, key, value_json FROM {table}"))  # noqa: S608 - constants
            for owner_id, key, value in rows:
                try:
                    json.loads(value)
                except (TypeError, ValueError):
                    return _named(conn, owner, owner_id) + f", its {kind} {key!r},"
    return "a stored value"


def damaged_row(engine: sqlalchemy.engine.Engine) -> str | None:
    """The first stored row Optuna cannot turn back into a study or trial, named as a user
    finds it ('trial 1 of study "s", its state "BOGUS"'); None when every row reads."""
    import datetime

    import sqlalchemy
    from optuna.distributions import json_to_distribution
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    states, directions = {s.name for s in TrialState}, {d.name for d in StudyDirection}
    with engine.connect() as conn:
        for tid, state in conn.execute(sqlalchemy.text("SELECT trial_id, state FROM trials")):
            if state not in states:
                return _named(conn, "trial", tid) + f", its state {_cut(state)!r}"
        for sid, direction in conn.execute(sqlalchemy.text(
                "SELECT study_id, direction FROM study_directions")):
            if direction not in directions:
                return _named(conn, "study", sid) + f", its direction {_cut(direction)!r}"
        for tid, *times in conn.execute(sqlalchemy.text(
                "SELECT trial_id, datetime_start, datetime_complete FROM trials")):
            for when in times:
                try:
                    if isinstance(when, str):
                        datetime.datetime.fromisoformat(when)
                except ValueError:
                    return _named(conn, "trial", tid) + f", its time {_cut(when)!r}"
        for tid, name, text in conn.execute(sqlalchemy.text(
                "SELECT trial_id, param_name, distribution_json FROM trial_params")):
            try:
                json_to_distribution(text)
            except (ValueError, TypeError, KeyError, RecursionError):
                return _named(conn, "trial", tid) + f", the distribution of its parameter " \
                    f"{_cut(name)!r}"
    return None


def _cut(value: object) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _named(conn: sqlalchemy.engine.Connection, owner: str, owner_id: int) -> str:
    import sqlalchemy

    if owner == "study":
        name = conn.execute(sqlalchemy.text(
            "SELECT study_name FROM studies WHERE study_id = :i"), {"i": owner_id}).scalar()
        return f"study {name!r}"
    row = conn.execute(sqlalchemy.text(
        "SELECT t.number, s.study_name FROM trials t JOIN studies s ON s.study_id = t.study_id "
        "WHERE t.trial_id = :i"), {"i": owner_id}).first()
    return f"trial {row[0]} of study {row[1]!r}" if row else f"trial id {owner_id}"
