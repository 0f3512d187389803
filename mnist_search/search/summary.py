"""Finished trials in the terms reports and notes need, and a study's answer per config.

A labelled trial's replicates ("baseline#2", "baseline#3") count as their reference label; a
grid point's replicates, and any trials of one config, count as that config. `answer()`
groups them, gives each config its n, mean and 95% interval, and names a best config only
with its interval and a Welch's t-test against the runner-up and the study's baseline, so
no number is shown without its n and no winner without its noise.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from ..spec import base_label
from ..stats import Summary, summarize

__all__ = ["ALPHA", "Answer", "ConfigResult", "FinishedTrial", "answer", "by_label",
           "finished_trials", "label_table", "welch_p"]

ALPHA = 0.05  # the verdicts' significance level (Welch's t-test, two-sided)
# Config fields that say how a trial ran, not what it is: replicates differ in them.
_HOW = ("seed", "order_seed", "order_skip", "device", "pad_hidden")
# A penalty whose zero is the natural baseline of a study that varies it alone.
_PENALTIES = ("l1", "l2", "weight_decay", "dropout", "input_dropout", "max_norm")


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
    value: float | None = None  # the (first) objective, as Optuna holds it


def finished_trials(study: optuna.Study) -> list[FinishedTrial]:
    """COMPLETE trials that recorded a result (a study still running is fine)."""
    refs = study.user_attrs.get("references", {})
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        a = t.user_attrs
        if not isinstance(a.get("config"), dict) or not _number(a.get("test_accuracy")):
            continue  # not recorded by a run (or edited outside one): nothing to summarize
        label = a.get("label")
        base = base_label(label) if label else None
        ref = refs.get(base, {}) if base else {}
        out.append(FinishedTrial(
            t.number, base, a.get("group") or ref.get("group") or "", a["config"],
            float(a["test_accuracy"]), list(a.get("train_loss", [])),
            a.get("penalised_layer_small_fraction"), a.get("parameters"),
            ref.get("notebook_accuracy"), list(ref.get("notebook_loss") or []),
            float(t.values[0]) if t.values else None))
    return out


def _number(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


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


@dataclass(frozen=True)
class ConfigResult:
    """One config's replicates: what sets it apart, and its objective's n, mean, interval."""

    name: str  # its label, or the varying values ("l2=0.0003")
    params: dict[str, Any]  # the fields that vary in the study, with this config's values
    values: tuple[float, ...]
    summary: Summary
    trials: tuple[int, ...]
    notebook: float | None = None

    def row(self) -> dict[str, Any]:
        s = self.summary
        return {**self.params, "n": s.n, "mean": round(s.mean, 2),
                "std": None if s.std is None else round(s.std, 2),
                "ci95": None if s.ci95 is None else round(s.ci95, 2),  # mean +/- this
                "notebook": self.notebook}

    def shown(self) -> str:
        s = self.summary
        interval = "" if s.ci95 is None else f" [{s.low:.2f}, {s.high:.2f}]"
        return f"{self.name}: {s.mean:.2f}{interval} (n = {s.n})"


@dataclass(frozen=True)
class Answer:
    """A study's answer: each config's result, in study order, and one line on the best."""

    study: str
    objective: str
    maximize: bool
    by: str  # "label" or "config"
    varying: tuple[str, ...]
    configs: tuple[ConfigResult, ...]
    verdict: str

    @property
    def columns(self) -> tuple[str, ...]:
        head = ("label",) if self.by == "label" else self.varying
        return (*head, "n", "mean", "std", "ci95", "notebook")

    def rows(self) -> list[dict[str, Any]]:
        return [{"label": c.name, **c.row()} if self.by == "label" else c.row()
                for c in self.configs]

    def to_json(self) -> dict[str, Any]:
        return {"study": self.study, "objective": self.objective, "by": self.by,
                "configs": self.rows(), "verdict": self.verdict}


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Welch's t-test, two-sided: the p-value that a and b share a mean (nan: no spread)."""
    import numpy as np
    from scipy import stats

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # identical replicates: scipy warns of precision loss and returns nan, said below
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(list(a), list(b), equal_var=False).pvalue)


def answer(study: optuna.Study, by: str | None = None, hint: str | None = None) -> Answer:
    """The study's finished trials grouped by label (where labels exist, or by="label") or by
    config (by="config"), with the verdict on its best. `hint`: what to run for more seeds."""
    runs = [r for r in finished_trials(study) if r.value is not None and math.isfinite(r.value)]
    labelled = any(r.label for r in runs)
    by = by or ("label" if labelled else "config")
    groups: dict[str, list[FinishedTrial]] = {}
    for r in runs:
        key = (r.label or _config_key(r.config)) if by == "label" else _config_key(r.config)
        groups.setdefault(key, []).append(r)
    order = {label: i for i, label in enumerate(study.user_attrs.get("references", {}))}
    keys = sorted(groups, key=lambda k: (order.get(k, len(order)), groups[k][0].number))
    varying = _varying([groups[k][0].config for k in keys])
    configs = tuple(_result(k, groups[k], varying, by) for k in keys)
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    objective = str(study.user_attrs.get("objective") or "objective")
    result = Answer(study.study_name, objective, maximize, by, varying, configs, "")
    return dataclasses.replace(result, verdict=_verdict(result, study, hint))


def _config_key(config: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in _HOW}, sort_keys=True,
                      default=str)


def _shown(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return "-".join(map(str, value))
    return value


def _varying(configs: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    keys = dict.fromkeys(k for c in configs for k in c if k not in _HOW)
    return tuple(k for k in keys
                 if len({json.dumps(c.get(k), default=str) for c in configs}) > 1)


def _result(key: str, runs: list[FinishedTrial], varying: tuple[str, ...],
            by: str) -> ConfigResult:
    config = runs[0].config
    params = {k: _shown(config.get(k)) for k in varying}
    name = key if by == "label" and runs[0].label else \
        (" ".join(f"{k}={v}" for k, v in params.items()) or "the fixed config")
    values = tuple(float(r.value) for r in runs if r.value is not None)
    notebook = next((r.notebook_accuracy for r in runs if r.notebook_accuracy is not None),
                    None)
    return ConfigResult(name, params, values, summarize(list(values)),
                        tuple(r.number for r in runs), notebook)


def _baseline(a: Answer) -> ConfigResult | None:
    """The reference labelled baseline; else, in a study that varies one penalty, its zero;
    else the first config (a grid's first point)."""
    if not a.configs:
        return None
    named = [c for c in a.configs if c.name == "baseline"]
    if named:
        return named[0]
    if len(a.varying) == 1 and a.varying[0] in _PENALTIES:
        zero = [c for c in a.configs if c.params.get(a.varying[0]) in (0, 0.0)]
        if zero:
            return zero[0]
    return a.configs[0]


def _versus(best: ConfigResult, other: ConfigResult, role: str) -> str:
    if other.summary.n < 2:
        return f"{role} {other.shown()} has one run: not compared"
    p = welch_p(best.values, other.values)
    differ = best.summary.mean != other.summary.mean
    beyond = (p < ALPHA) if math.isfinite(p) else differ
    test = f"Welch's t-test, p = {p:.2g}" if math.isfinite(p) else "no spread in either"
    word = "beats" if beyond else "does not beat"
    return f"{word} the {role} {other.shown()} beyond seed noise ({test})"


def _verdict(a: Answer, study: optuna.Study, hint: str | None) -> str:
    if not a.configs:
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if not done:
            return "no completed trial yet"
        # an objective of the user's own stores no config: say so, not "no trial yet"
        return (f"{done} complete trials, none recorded by an mnist-search run (no stored "
                "config and test accuracy: an objective of your own?), so no per-config "
                "answer; show, export and load_results list them as Optuna holds them")
    with_interval = [c for c in a.configs if c.summary.n >= 2]
    more = hint or ("mnist-search confirm " + study.study_name + " --top 5 --seeds 3"
                    if study.user_attrs.get("sampler") not in (None, "grid")
                    else "run again with --replicates 3")
    if not with_interval:
        return (f"n = 1 per config: no interval, so no best is named ({len(a.configs)} "
                f"single runs of {a.objective}); for seeds: {more}")
    sign = 1.0 if a.maximize else -1.0
    ranked = sorted(with_interval, key=lambda c: -sign * c.summary.mean)
    best = ranked[0]
    parts = [f"best {a.objective}: {best.shown()}"]
    if len(ranked) > 1:
        parts.append(_versus(best, ranked[1], "runner-up"))
    base = _baseline(a)
    if base is not None and base is not best and (len(ranked) < 2 or base is not ranked[1]):
        parts.append(_versus(best, base, "baseline"))
    if len(with_interval) < len(a.configs):
        parts.append(f"{len(a.configs) - len(with_interval)} configs with one run are "
                     "not ranked")
    return "; ".join(parts)
