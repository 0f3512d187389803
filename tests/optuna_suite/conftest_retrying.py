"""Copied as conftest.py next to Optuna's own storage tests: every RDBStorage they build
is mnist-search's RetryingRDBStorage, reached from its first call (so faults are retried),
with faults injected into the retried calls as $MNIST_SEARCH_SUITE_FAULTS says:

- none: as they are;
- before: every 4th storage call first fails with "database is locked" (a lock never taken:
  nothing committed), the way SQLite's busy timeout fails;
- after: every 4th call of those retry.py makes harmless after a lost commit (upserts, a
  repeated param, the tell and the study's creation) does its work, commits, and then fails
  with a dropped connection, so the retry runs against a commit it cannot see.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import optuna
import optuna.storages
import optuna.storages._rdb.storage as rdb_module
import sqlalchemy.exc

from mnist_search.search import retry

FAULTS = os.environ.get("MNIST_SEARCH_SUITE_FAULTS", "none")
EVERY = 4
AFTER_SAFE = {"set_trial_param", "_set_trial_param", "set_trial_intermediate_value",
              "set_trial_user_attr", "set_trial_system_attr", "set_study_user_attr",
              "set_study_system_attr", "record_heartbeat", "set_trial_state_values",
              "create_new_study"}
_count = itertools.count(1)
INJECTED = {"before": 0, "after": 0}

retry.FIRST_DELAY_S = 0.001  # the suite has thousands of calls: retry at once


def _fault(text: str) -> Exception:
    exc = optuna.exceptions.StorageInternalError("injected")
    exc.__cause__ = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception(text))
    return exc


class SuiteRetryingRDBStorage(retry.RetryingRDBStorage):
    retry_window_s = 30.0
    reached = True

    def retrying(self, name: str, call: Any, settled: Any = None) -> Any:
        if FAULTS == "none" or getattr(retry._inside, "active", False):
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
                                f"{INJECTED['after']} after one")
