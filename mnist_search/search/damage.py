"""Naming the stored attribute that fails to decode, as a user finds it, for the one-line
error a damaged or hand-edited database gets instead of Optuna's JSONDecodeError."""

from __future__ import annotations

import json

import sqlalchemy

__all__ = ["damaged_value"]

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


def _named(conn: sqlalchemy.engine.Connection, owner: str, owner_id: int) -> str:
    if owner == "study":
        name = conn.execute(sqlalchemy.text(
            "SELECT study_name FROM studies WHERE study_id = :i"), {"i": owner_id}).scalar()
        return f"study {name!r}"
    row = conn.execute(sqlalchemy.text(
        "SELECT t.number, s.study_name FROM trials t JOIN studies s ON s.study_id = t.study_id "
        "WHERE t.trial_id = :i"), {"i": owner_id}).first()
    return f"trial {row[0]} of study {row[1]!r}" if row else f"trial id {owner_id}"
