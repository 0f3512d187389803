"""The rows Optuna's RDBStorage writes for a new trial, written for several at once.

A claim creates its new trials under the study lock every worker waits on; Optuna's own
create_new_trial takes a transaction and an ORM flush per trial. insert_trials writes the
same rows (the trial, its heartbeat, its user attributes) for n trials in a few statements
of the caller's transaction (RetryingRDBStorage.create_new_trials).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

__all__ = ["insert_trials"]


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
