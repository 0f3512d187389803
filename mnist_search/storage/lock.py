"""The study lock: one lock shared by every process using a study, so enqueueing and
claiming trials is serialised (a file lock beside a SQLite database, an advisory lock on
PostgreSQL)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .connect import sqlite_path

if TYPE_CHECKING:
    import sqlalchemy

__all__ = ["study_lock"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def study_lock(url: str, study_name: str) -> Iterator[None]:
    """A lock shared by every process using this study: enqueue and claim a trial under it.

    SQLite has no SELECT ... FOR UPDATE, so two workers can pop the same enqueued trial;
    serialising the ask step removes that race. PostgreSQL gets an advisory lock.
    """
    path = sqlite_path(url)
    if path is not None:
        lock_path = path.with_name(path.name + ".lock")
        with lock_path.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    if url.startswith("postgresql"):
        with _advisory_lock(url, study_name):
            yield
        return
    yield


@contextlib.contextmanager
def _advisory_lock(url: str, study_name: str) -> Iterator[None]:
    """PostgreSQL's advisory lock on the study's name, on a connection of its own. Taking
    it rides out a restart like any storage call; if the connection drops while it is held,
    the server has released the lock with it, so the unlock is skipped."""
    import sqlalchemy

    from .transient import is_transient, retry_window, with_retries

    key = int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)
    engine = _lock_engine(url)

    def lock() -> sqlalchemy.Connection:
        conn = engine.connect()
        try:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        except BaseException:
            conn.close()
            raise
        return conn

    conn = with_retries(lock, "advisory lock", retry_window())
    try:
        yield
    finally:
        try:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        except Exception as exc:
            conn.invalidate()  # not back into the pool: it is broken
            if not is_transient(exc):
                raise
            log.info("advisory lock's connection dropped (the server released the lock)")
        finally:
            conn.close()


_LOCK_ENGINES: dict[str, sqlalchemy.Engine] = {}


def _lock_engine(url: str) -> sqlalchemy.Engine:
    """One engine per URL for the advisory lock, its one connection kept between claims:
    a new connection per claim (TCP, authentication, a server process) cost more than the
    claim itself. Checked before use, so a connection the server closed is replaced."""
    import sqlalchemy

    engine = _LOCK_ENGINES.get(url)
    if engine is None:
        engine = _LOCK_ENGINES[url] = sqlalchemy.create_engine(
            url, pool_size=1, max_overflow=2, pool_pre_ping=True)
    return engine
