"""Copied as conftest.py next to Optuna's own storage tests: every RDBStorage they build
is mnist-search's RetryingRDBStorage, reached from its first call (so faults are retried),
with faults injected into the retried calls as $MNIST_SEARCH_SUITE_FAULTS says:

- none: as they are;
- before: every 4th storage call first fails with "database is locked" (a lock never taken:
  nothing committed), the way SQLite's busy timeout fails;
- after: every 4th call of those retry.py makes harmless after a lost commit (upserts, a
  repeated param, the tell and the study's creation) does its work, commits, and then fails
  with a dropped connection, so the retry runs against a commit it cannot see.

With $MNIST_SEARCH_SUITE_PG (a PostgreSQL server's URL), every storage the tests would open
on a new SQLite file (or in memory) opens on that server instead, each in a fresh schema of
its own (so each test starts empty, as with a new file). A SQLite file that already holds a
database (the schema-upgrade tests' old versions) stays SQLite.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import optuna
import optuna.storages
import optuna.storages._rdb.storage as rdb_module
import sqlalchemy.exc

from mnist_search.storage import retry, transient

FAULTS = os.environ.get("MNIST_SEARCH_SUITE_FAULTS", "none")
PG = os.environ.get("MNIST_SEARCH_SUITE_PG")
_schemas = itertools.count(1)
MOVED = {"to_postgres": 0}
_SCHEMA_OF: dict[str, str] = {}


def _on_postgres(url: str, engine_kwargs: dict[str, Any] | None
                 ) -> tuple[str, dict[str, Any] | None]:
    """A new SQLite storage's URL and engine options as a fresh PostgreSQL schema's."""
    path = url.removeprefix("sqlite:///")
    if not PG or not url.startswith("sqlite") or (
            url not in _SCHEMA_OF and path not in ("", ":memory:") and os.path.exists(path)
            and os.path.getsize(path)):
        return url, engine_kwargs
    # one file is one database: two storages of one file (a test's two "processes") share
    # one schema, as they would share the file
    schema = _SCHEMA_OF.get(url) if path not in ("", ":memory:") else None
    if schema is None:
        schema = f"suite_{os.getpid()}_{next(_schemas)}"
        admin = sqlalchemy.create_engine(PG, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
        admin.dispose()
        if path not in ("", ":memory:"):
            _SCHEMA_OF[url] = schema
    kwargs = dict(engine_kwargs or {})
    kwargs["connect_args"] = {"options": f"-c search_path={schema}"}  # no SQLite timeout
    MOVED["to_postgres"] += 1
    return PG, kwargs
EVERY = 4
AFTER_SAFE = {"set_trial_param", "_set_trial_param", "set_trial_intermediate_value",
              "set_trial_user_attr", "set_trial_system_attr", "set_study_user_attr",
              "set_study_system_attr", "record_heartbeat", "set_trial_state_values",
              "create_new_study"}
_count = itertools.count(1)
INJECTED = {"before": 0, "after": 0}

transient.FIRST_DELAY_S = 0.001  # the suite has thousands of calls: retry at once


def _fault(text: str) -> Exception:
    exc = optuna.exceptions.StorageInternalError("injected")
    exc.__cause__ = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception(text))
    return exc


class SuiteRetryingRDBStorage(retry.RetryingRDBStorage):
    retry_window_s = 30.0
    reached = True

    def __init__(self, url: str, engine_kwargs: dict[str, Any] | None = None,
                 *args: Any, **kwargs: Any) -> None:
        url, engine_kwargs = _on_postgres(url, engine_kwargs)
        super().__init__(url, engine_kwargs, *args, **kwargs)

    def retrying(self, name: str, call: Any, settled: Any = None) -> Any:
        if FAULTS == "none" or self.thread().active:
            return super().retrying(name, call, settled)
        first = [True]

        def faulty() -> Any:
            if first[0] and next(_count) % EVERY == 0:
                first[0] = False
                if FAULTS == "before":
                    INJECTED["before"] += 1
                    raise _fault("database is locked")
                if name in AFTER_SAFE:
                    call()
                    INJECTED["after"] += 1
                    raise _fault("server closed the connection unexpectedly")
            first[0] = False
            return call()

        return super().retrying(name, faulty, settled)


optuna.storages.RDBStorage = SuiteRetryingRDBStorage  # type: ignore[misc]
rdb_module.RDBStorage = SuiteRetryingRDBStorage  # type: ignore[misc]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(f"mnist-search faults injected ({FAULTS}): "
                                f"{INJECTED['before']} before a commit, "
                                f"{INJECTED['after']} after one; "
                                f"{MOVED['to_postgres']} storages on PostgreSQL")
