"""Naming the stored attribute that fails to decode, as a user finds it, for the one-line
error a damaged or hand-edited database gets instead of Optuna's JSONDecodeError."""

from __future__ import annotations

import json

import sqlalchemy

__all__ = ["damaged_row", "damaged_value"]

_ATTRIBUTE_TABLES = (("trial_user_attributes", "trial", "user attribute"),
                     ("trial_system_attributes", "trial", "system attribute"),
                     ("study_user_attributes", "study", "user attribute"),
                     ("study_system_attributes", "study", "system attribute"))


def damaged_value(engine: sqlalchemy.engine.Engine) -> str:
    """Which stored attribute fails to decode, named as a user finds it: 'trial 3 of study
    "notebook", its user attribute "config"' (or 'a stored value' if none is found)."""
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
    if owner == "study":
        name = conn.execute(sqlalchemy.text(
            "SELECT study_name FROM studies WHERE study_id = :i"), {"i": owner_id}).scalar()
        return f"study {name!r}"
    row = conn.execute(sqlalchemy.text(
        "SELECT t.number, s.study_name FROM trials t JOIN studies s ON s.study_id = t.study_id "
        "WHERE t.trial_id = :i"), {"i": owner_id}).first()
    return f"trial {row[0]} of study {row[1]!r}" if row else f"trial id {owner_id}"
