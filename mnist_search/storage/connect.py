"""Connecting to where studies live: URL resolution, and a SQLite set up for several local
workers (the study lock is lock.py; storage errors are explained in one line by faults.py).

The database stays a plain Optuna RDB storage: `optuna studies --storage URL` and
optuna-dashboard read it with no help from this package.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StorageError, StorageUrlError, redact, remember_secrets
from .faults import explain

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

__all__ = ["checked_url", "has_study", "make_storage", "resolve_url", "sqlite_path"]

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///mnist_search.db"
ENV_VAR = "MNIST_SEARCH_STORAGE"
SQLITE_TIMEOUT_S = 60.0  # busy timeout: how long a writer waits for the lock before failing
TIMEOUT_ENV = "MNIST_SEARCH_SQLITE_TIMEOUT"  # seconds; overrides SQLITE_TIMEOUT_S


def sqlite_timeout() -> float:
    try:
        return float(os.environ.get(TIMEOUT_ENV) or SQLITE_TIMEOUT_S)
    except ValueError:
        raise StorageError(f"${TIMEOUT_ENV} = {os.environ[TIMEOUT_ENV]!r} is not allowed: "
                           "expected a number of seconds") from None


def resolve_url(url: str | None) -> str:
    """--storage beats $MNIST_SEARCH_STORAGE beats sqlite:///mnist_search.db; its passwords
    are noted, so that nothing printed from now on shows them."""
    url = checked_url(url)
    remember_secrets(url)
    return url


def checked_url(url: str | None) -> str:
    """resolve_url's URL, checked as it checks, with its passwords noted only when the check
    fails (for the message). For a look before anything is printed: noting them parses a
    server's URL with SQLAlchemy, a 0.3 s import `run` would pay before its workers start."""
    url = url or os.environ.get(ENV_VAR) or DEFAULT_URL
    scheme = url.split("://", 1)[0] if "://" in url else None
    if scheme is not None and scheme.startswith(("sqlite", "postgresql", "mysql")):
        return url
    remember_secrets(url)  # before the message can show it
    if scheme is None:
        raise StorageUrlError(f"storage URL {redact(url)!r} is not a URL: expected "
                              "sqlite:///PATH.db or postgresql+psycopg://USER@HOST/DB")
    raise StorageUrlError(f"storage URL scheme {redact(scheme)!r} is not supported: expected "
                          "sqlite, postgresql or mysql")


def sqlite_path(url: str) -> Path | None:
    """The database file of a sqlite:/// URL, or None for other databases / in-memory."""
    if not url.startswith("sqlite:///"):
        return None
    rest = url[len("sqlite:///"):].split("?", 1)[0]
    if rest.startswith("file:"):  # sqlite:///file:PATH?mode=ro&uri=true
        rest = rest[len("file:"):]
    if rest in ("", ":memory:"):
        return None
    return Path(rest)


def has_study(url: str, name: str) -> bool:
    """Whether a SQLite storage already holds study `name`, read with sqlite3 alone (no
    Optuna, nothing written); False for a new file, and for a server's storage, where
    finding out would cost the imports a caller asks this to avoid."""
    path = sqlite_path(url)
    if path is None or not path.is_file():
        return False
    import sqlite3

    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=1)
        try:
            row = con.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,)).fetchone()
        finally:
            con.close()
    except sqlite3.Error:  # not a storage yet, or locked: the run finds out properly
        return False
    return row is not None


def is_read_only(url: str) -> bool:
    return "mode=ro" in url.split("?", 1)[-1]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {int(sqlite_timeout() * 1000)}")
    cur.close()


def make_storage(url: str | None = None, *, heartbeat_interval: int | None = None,
                 grace_period: int | None = None,
                 retry_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None,
                 create: bool = True, reached: bool = False,
                 beats_from_creation: bool = False) -> optuna.storages.RDBStorage:
    """An optuna RDBStorage that rides out transient faults (retry.py); for SQLite with
    WAL journaling and a busy timeout.

    WAL lets the dashboard read while workers write; the busy timeout makes a writer wait
    for the lock instead of failing with "database is locked". `reached`: another process
    of this run has already opened the storage, so faults are retried from the first call.
    `beats_from_creation`: a worker's storage, whose trials beat from the moment they exist
    or are claimed (retry.py), where a user's own loop keeps Optuna's contract that a
    trial that never beat is never stale.
    """
    import optuna
    import sqlalchemy

    from .retry import RetryingRDBStorage
    from .transient import retry_window

    url = resolve_url(url)
    path = sqlite_path(url)
    kwargs: dict[str, Any] = {}
    if path is not None:
        if not create and not path.exists():
            raise StorageError(f"{redact(url)}: no such database file")
        if path.parent and not path.parent.exists():
            raise StorageUrlError(f"{redact(url)}: directory {path.parent} does not exist")
        kwargs["connect_args"] = {"timeout": sqlite_timeout()}
    elif url.startswith("postgresql"):
        kwargs["pool_pre_ping"] = True
        if not create:
            _require_schema_server(url)
    # every open of a SQLite file under the folder lock, readers' too: Optuna's RDBStorage
    # runs create_all on whatever it opens, so a reader racing a first run's open could fail
    # it ("table ... already exists"); only a writer switches the file to WAL (a reader
    # leaves a file as it found it)
    with _creating(path):
        if path is not None and not create:
            _require_schema_file(path, url)  # under the lock: a first run's open is whole
        if path is not None and create and not is_read_only(url):
            _enable_wal(path)
        try:
            with warnings.catch_warnings():
                # Heartbeats are "experimental" in Optuna 5 (since 2.9); this package relies
                # on them on purpose, so the warning is noise on every command using them.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = RetryingRDBStorage(
                    url, engine_kwargs=kwargs, heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period, heartbeat_stale_trial_callback=retry_callback)
        except Exception as exc:
            raise StorageError(explain(exc, url)) from exc
    storage.retry_window_s, storage.reached = retry_window(), reached
    storage.beats_from_creation = beats_from_creation
    if path is not None:
        sqlalchemy.event.listen(storage.engine, "connect", _sqlite_pragmas)
    return storage


@contextlib.contextmanager
def _creating(path: Path | None) -> Iterator[None]:
    """While Optuna opens a SQLite file (and may create its tables and stamp its schema
    version): an exclusive lock on its folder, so two first runs on a new file do not race
    ("table studies already exists", or on alembic_version). Locking the folder, not a file
    beside the database, leaves nothing behind; it is held for the open alone."""
    if path is None:
        yield
        return
    fd = os.open(str(path.parent) if str(path.parent) else ".", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


_NO_SCHEMA = "holds no Optuna storage (no studies table); nothing was written to it"


def _require_schema_file(path: Path, url: str) -> None:
    """A reader never turns a file that is not an Optuna storage (an empty one, a
    mistyped name) into one: Optuna's RDBStorage creates its tables in whatever it opens."""
    import sqlite3

    if path.is_dir():
        raise StorageError(f"{redact(url)}: {path} is a folder, not a database file")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=sqlite_timeout())
        try:
            found = con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                "name = 'studies'").fetchone()
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"{redact(url)}: {exc} (the file is not an SQLite database)") \
            from None
    if found is None:
        raise StorageError(f"{redact(url)} {_NO_SCHEMA}")


def _require_schema_server(url: str) -> None:
    """The same for a database server: an empty database stays empty under a reader."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        found = sqlalchemy.inspect(engine).has_table("studies")
    except Exception as exc:
        raise StorageError(explain(exc, url)) from exc
    finally:
        engine.dispose()
    if not found:
        raise StorageError(f"{redact(url)} {_NO_SCHEMA}")


def _enable_wal(path: Path) -> None:
    """Switch the file to WAL once (the mode is stored in the file) before Optuna opens it."""
    import sqlite3

    try:
        con = sqlite3.connect(str(path), timeout=sqlite_timeout())
        try:
            con.execute("PRAGMA journal_mode=WAL")
        finally:
            con.close()
    except sqlite3.Error as exc:
        hint = "check the file is a writable SQLite database on a local disk"
        if not os.access(path.parent if str(path.parent) else ".", os.W_OK):
            hint = f"its directory {path.parent} is read-only; SQLite needs to write beside it"
        raise StorageError(f"storage sqlite:///{path}: {exc} ({hint})") from exc
