"""Storage errors in one line: the chain of causes behind Optuna's wrapper
(StorageInternalError), the one that says something, and what to do about it.
"""

from __future__ import annotations

from ..errors import StorageError, redact

__all__ = ["cause_chain", "cause_text", "describe", "explain", "is_storage_fault"]


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
