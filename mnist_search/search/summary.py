"""Finished trials in the terms reports and notes need, and the per-label replicate table.

A labelled trial's replicates ("baseline#2", "baseline#3") count as their reference label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from ..spec import base_label
from ..stats import summarize

__all__ = ["FinishedTrial", "by_label", "finished_trials", "label_table"]


@dataclass(frozen=True)
class FinishedTrial:
    """One COMPLETE trial with its recorded results."""

    number: int
    label: str | None  # base label: replicates "x#2" count as "x"
    group: str
    config: dict[str, Any]
    test_accuracy: float
    train_loss: list[float]
    small_fraction: float | None
    parameters: int | None
    notebook_accuracy: float | None = None
    notebook_loss: list[float] = field(default_factory=list)


def finished_trials(study: optuna.Study) -> list[FinishedTrial]:
    """COMPLETE trials that recorded a result (a study still running is fine)."""
    refs = study.user_attrs.get("references", {})
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        a = t.user_attrs
        if "config" not in a or a.get("test_accuracy") is None:
            continue
        label = a.get("label")
        base = base_label(label) if label else None
        ref = refs.get(base, {}) if base else {}
        out.append(FinishedTrial(
            t.number, base, a.get("group") or ref.get("group") or "", a["config"],
            float(a["test_accuracy"]), list(a.get("train_loss", [])),
            a.get("penalised_layer_small_fraction"), a.get("parameters"),
            ref.get("notebook_accuracy"), list(ref.get("notebook_loss") or [])))
    return out


def by_label(runs: list[FinishedTrial]) -> dict[str, list[FinishedTrial]]:
    """Trials grouped by base label (replicates together), in trial order."""
    out: dict[str, list[FinishedTrial]] = {}
    for r in runs:
        if r.label:
            out.setdefault(r.label, []).append(r)
    return out


def label_table(runs: list[FinishedTrial], order: list[str] | None = None
                ) -> list[dict[str, Any]]:
    """Per label: n, mean, std, 95% interval of test accuracy, and the notebook's figure.

    Rows follow `order` (the study file's reference order) where given.
    """
    rows = []
    groups = by_label(runs)
    rank = {label: i for i, label in enumerate(order or [])}
    for label in sorted(groups, key=lambda k: rank.get(k, len(rank))):
        group = groups[label]
        s = summarize([r.test_accuracy for r in group])
        rows.append({"label": label, "n": s.n, "mean": round(s.mean, 2),
                     "std": None if s.std is None else round(s.std, 2),
                     "ci95": None if s.ci95 is None else round(s.ci95, 2),
                     "notebook": group[0].notebook_accuracy})
    return rows
