"""Study results as flat rows: for `show`, `export` and `load_results` (pandas).

One row per trial with flattened params (params_*), the recorded user attrs, per-epoch
curves as columns (value_epoch_k, train_loss_epoch_k, test_accuracy_epoch_k) and the
notebook's reported accuracy beside ours where the study file gives it.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import StudyNotFound, printable, redact
from ..spec import base_label
from ..storage.connect import make_storage, resolve_url

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SHOW_COLUMNS", "StudyNotFound", "compact", "load_results", "load_study",
           "pareto_rows", "rows", "table", "top_rows", "trial_row"]

SKIP_ATTRS = ("config", "train_loss", "test_accuracy_curve", "last_batch_loss")


def load_study(study_name: str, storage: str | None = None) -> optuna.Study:
    """A stored study by name; StudyNotFound (listing the names there are) if it is not."""
    url = resolve_url(storage)
    store = make_storage(url, create=False)
    try:
        return optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        names = optuna.study.get_all_study_names(storage=store)
        raise StudyNotFound(
            f"no study named {study_name!r} in {redact(url)}; it has: "
            f"{', '.join(names) if names else 'no studies'}") from None


def trial_row(trial: FrozenTrial, notebook: dict[str, Any],
              objectives: list[str] | None = None) -> dict[str, Any]:
    """One trial, flat. `value` is the (first) objective; a study with several objectives
    also gets a `value_<objective>` column for each."""
    attrs = trial.user_attrs
    done = trial.state == TrialState.COMPLETE and trial.values is not None
    label = attrs.get("label")
    ref = notebook.get(base_label(str(label)), {}) if label else {}
    row: dict[str, Any] = {
        "number": trial.number,
        "state": trial.state.name,
        "label": label,
        "group": attrs.get("group"),
        "value": trial.values[0] if done else None,
        "test_accuracy": attrs.get("test_accuracy"),
        "val_accuracy": attrs.get("val_accuracy"),
        "notebook_accuracy": ref.get("notebook_accuracy"),
        # under the study's [constraints]: every constraint value <= 0 (None: no constraint)
        "feasible": all(v <= 0 for v in trial.constraints.values())
        if trial.constraints else None,
    }
    if objectives and len(objectives) > 1:
        for name, value in zip(objectives, trial.values if done else [None] * len(objectives),
                               strict=True):
            row[f"value_{name}"] = value
    if row["notebook_accuracy"] is not None and row["test_accuracy"] is not None:
        row["delta_vs_notebook"] = round(row["test_accuracy"] - row["notebook_accuracy"], 4)
    else:
        row["delta_vs_notebook"] = None
    for key, value in trial.params.items():
        row[f"params_{key}"] = value
    for key, value in attrs.items():
        if key not in row and key not in SKIP_ATTRS:
            row[key] = json.dumps(value) if isinstance(value, (list, dict)) else value
    for epoch, value in sorted(trial.intermediate_values.items()):
        row[f"value_epoch_{epoch}"] = value
    for name in ("train_loss", "test_accuracy_curve", "last_batch_loss"):
        prefix = "test_accuracy" if name == "test_accuracy_curve" else name
        curve = attrs.get(name)
        if not isinstance(curve, list):  # a user's own objective may store one number
            if curve is not None:
                row[name] = curve
            continue
        for i, value in enumerate(curve, 1):
            row[f"{prefix}_epoch_{i}"] = value
    row["datetime_start"] = trial.datetime_start.isoformat() if trial.datetime_start else None
    row["duration_s"] = trial.duration.total_seconds() if trial.duration else None
    return row


def rows(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> list[dict[str, Any]]:
    notebook = study.user_attrs.get("references", {})
    objectives = study.user_attrs.get("objectives")
    if not (isinstance(objectives, list) and len(objectives) == len(study.directions)
            and all(isinstance(o, str) for o in objectives)):
        objectives = None  # edited outside this package: the values stay unnamed
    if not isinstance(notebook, dict):
        notebook = {}
    chosen = study.get_trials(deepcopy=False) if trials is None else trials
    return [trial_row(t, notebook, objectives) for t in chosen]


def pareto_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """The Pareto front of a study with several objectives, by its first objective."""
    sign = -1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1
    front = sorted(study.best_trials, key=lambda t: sign * t.values[0])
    return rows(study, front)


def load_results(study_name: str, storage: str | None = None) -> pd.DataFrame:
    """All trials of a study as a pandas DataFrame (the same columns as `export`)."""
    import pandas as pd

    return pd.DataFrame(rows(load_study(study_name, storage)))


def top_rows(study: optuna.Study, top: int | None) -> list[dict[str, Any]]:
    """Rows in trial order, or the best `top` finished ones in ranking order."""
    all_rows = rows(study)
    if top is None:
        return all_rows
    sign = -1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1
    done = [r for r in all_rows if r["value"] is not None and math.isfinite(r["value"])]
    # an infeasible trial (over a [constraints] cap) ranks after every feasible one
    return sorted(done, key=lambda r: (r["feasible"] is False, sign * r["value"]))[:top]


SHOW_COLUMNS = ("number", "label", "params", "value", "test_accuracy", "notebook_accuracy",
                "state", "population_size", "stack_seconds")


def compact(row: dict[str, Any]) -> dict[str, Any]:
    """The `show` view of a row: params folded into one readable string."""
    params = " ".join(f"{k[7:]}={_fmt(v)}" for k, v in row.items() if k.startswith("params_"))
    out = {k: row.get(k) for k in SHOW_COLUMNS if k != "params"}
    out["params"] = params
    extra = {k: v for k, v in row.items() if k.startswith("value_") and "epoch" not in k}
    if row.get("feasible") is not None:
        extra["feasible"] = row["feasible"]
    return {**{k: out.get(k) for k in SHOW_COLUMNS}, **extra}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else printable(str(v))  # names come from a shared storage


def table(items: list[dict[str, Any]], columns: tuple[str, ...] = SHOW_COLUMNS) -> str:
    cells = [[_fmt(r.get(c)) for c in columns] for r in items]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
              for row in cells]
    return "\n".join(lines)
