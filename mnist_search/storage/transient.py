"""What counts as a transient storage fault, and the retry loop that rides one out.

A fault is transient when waiting may cure it: the server went away, refuses connections
while it restarts, or a lock is held for now (SQLite's "database is locked"). A failed call
is retried with backoff (FIRST_DELAY_S doubling to MAX_DELAY_S) for at most a window of
seconds (RETRY_WINDOW_S, or $MNIST_SEARCH_STORAGE_RETRY; 0 turns it off). Whether a failed
call may still have committed decides whether a retry's error may mean that the first
attempt did the work (retry.py settles those cases for each storage call).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import StorageError
from .faults import cause_chain, cause_text

__all__ = ["FIRST_DELAY_S", "MAX_DELAY_S", "RETRY_ENV", "RETRY_WINDOW_S", "SettleCheck",
           "is_transient", "may_have_committed", "retried_call", "retry_window", "short",
           "with_retries"]

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_WINDOW_S = 60.0  # how long a worker keeps retrying a storage that stopped answering
RETRY_ENV = "MNIST_SEARCH_STORAGE_RETRY"  # seconds; overrides RETRY_WINDOW_S, 0 turns it off
FIRST_DELAY_S, MAX_DELAY_S = 0.25, 5.0  # backoff: doubles from the first delay up to the max

# Causes that pass: the server is restarting or went away, or a lock is held for now.
_TRANSIENT = ("database is locked", "database table is locked", "server closed the connection",
              "connection refused", "terminating connection", "connection is closed",
              "the connection is closed", "the database system is starting up",
              "the database system is shutting down", "the database system is in recovery",
              "consuming input failed", "connection reset", "connection timed out",
              "could not receive data", "could not send data", "no connection to the server",
              "ssl connection has been closed", "connection to server", "broken pipe",
              "admin_shutdown", "cannot_connect_now")
# Transient causes that mean the call committed nothing: the lock was never taken, or no
# connection was made. Only other failures (a connection lost mid-call) may hide a commit.
_NOTHING_COMMITTED = ("database is locked", "database table is locked", "connection refused",
                      "the database system is starting up", "cannot_connect_now",
                      "the database system is shutting down",
                      "the database system is in recovery")
# Causes that do not pass by waiting, even where they share a message above.
_PERMANENT = ("password authentication failed", "does not exist", "disk is full",
              "readonly", "read-only", "no such table", "not a database")

def retry_window() -> float:
    """$MNIST_SEARCH_STORAGE_RETRY seconds, else RETRY_WINDOW_S."""
    raw = os.environ.get(RETRY_ENV)
    if not raw:
        return RETRY_WINDOW_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise StorageError(f"${RETRY_ENV} = {raw!r} is not allowed: expected seconds >= 0 "
                           "(0 turns retrying off)")
    return value


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) is a storage fault that waiting may cure."""
    import sqlalchemy.exc

    chain = cause_chain(exc)
    text = " ".join(str(e).lower() for e in chain)
    if any(key in text for key in _PERMANENT):
        return False
    for e in chain:
        if isinstance(e, sqlalchemy.exc.DisconnectionError):
            return True
        if isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated:
            return True
    return any(key in text for key in _TRANSIENT)


def may_have_committed(exc: BaseException) -> bool:
    """Whether a call that failed with `exc` may still have committed its transaction: its
    connection was lost mid-call, so the commit's outcome is unknown. A lock that was never
    taken or a connection never made committed nothing."""
    text = " ".join(str(e).lower() for e in cause_chain(exc))
    return not any(key in text for key in _NOTHING_COMMITTED)


SettleCheck = Callable[[BaseException], tuple[bool, Any]]


def with_retries(call: Callable[[], T], what: str, window: float,
                 settled: SettleCheck | None = None) -> T:
    """call(), retried with backoff while it fails for a transient cause, for at most
    `window` seconds from the first failure. After an attempt that may have committed
    (may_have_committed), `settled(exc)` may say that a retry's error means that attempt
    did the work: (True, the result to return)."""
    return retried_call(call, what, window, settled)[0]


def retried_call(call: Callable[[], T], what: str, window: float,
                  settled: SettleCheck | None) -> tuple[T, bool, bool]:
    """with_retries, whether it had to retry, and whether a failed attempt may have
    committed (so that the result may be a retry's view of that commit)."""
    started: float | None = None
    delay, lost_commit = FIRST_DELAY_S, False
    while True:
        try:
            result = call()
        except Exception as exc:
            failure: Exception = exc
            if lost_commit and settled is not None:
                try:
                    done, value = settled(exc)
                except Exception as check:  # the check failed too: retry on its cause
                    done, value, failure = False, None, check
                if done:
                    result = value
                    break
            now = time.monotonic()
            if window <= 0 or not is_transient(failure) or \
                    (started is not None and now - started >= window):
                if started is not None:
                    log.error("storage still failing after %.0f s of retries (%s): giving up",
                              now - started, what)
                raise
            if started is None:
                started = now
                log.warning("storage unavailable (%s: %s); retrying for up to %.0f s",
                            what, short(failure), window)
            time.sleep(min(delay, max(0.0, started + window - now)))
            delay = min(2 * delay, MAX_DELAY_S)
            lost_commit = lost_commit or may_have_committed(failure)
            continue
        break
    if started is not None:
        log.info("storage answers again after %.1f s (%s)", time.monotonic() - started, what)
    return result, started is not None, lost_commit


def short(exc: BaseException) -> str:
    cause = cause_chain(exc)[-1]
    return f"{type(cause).__name__}: {cause_text(cause)[:160]}"
