"""Confirm a search's winners: retrain its best configs with fresh seeds, apart from it.

A search picks its best trial from single runs, so the pick is optimistic (the winner's
curse): among many configs, the one selected is likely one whose seed happened to be kind.
Confirming retrains the K best configs (for several objectives, up to K trials of the
Pareto front) with N fresh seeds each and reports each config's mean and 95% interval, the
winner's curse and whether the top config beats the runner-up beyond seed noise (Welch's
t-test).

The replicates are a study of their own, "<study>-confirm", in the same storage, written
as a study file would say it (confirm_spec): each confirmed trial's config is a reference
labelled "trial-N", with N replicates ("trial-N#2", ...), so `run_study` trains them as it
trains any study (same-shape configs and their seeds stacked, --workers, progress, one
lifecycle) and a second confirm reuses the replicates stored and trains only the missing
seeds. The searched study's best trial, its trial count and what its sampler learns from
stay as they were; the dashboard, `show`, `report` and `rerun` read the replicates.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..config import TrainConfig
from ..errors import UsageError
from ..spec import REPLICATE_MARK, StudySpec
from ..stats import Summary, summarize
from ..storage.internals import storage_of, storage_url, trial_id
from ..tables import Table

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ALPHA", "CONFIRM_SUFFIX", "ConfirmReport", "Confirmed", "confirm_spec",
           "confirm_study_name", "confirm_url", "confirmed", "confirmed_of",
           "fail_left_running", "verdict"]

CONFIRM_SUFFIX = "-confirm"
LABEL = "trial-"  # a replicate's label: "trial-N", then "trial-N#2", ...
ALPHA = 0.05  # the verdict's significance level
_HOW = ("seed", "order_seed", "order_skip", "pad_hidden", "device")  # not what a config is


def confirm_url(study: optuna.Study) -> str:
    """The storage URL of the database `study` lives in, where its confirm study goes, for
    the worker processes that train the replicates; UsageError for a study in memory."""
    return storage_url(study)


def confirm_study_name(study_name: str) -> str:
    return study_name + CONFIRM_SUFFIX


@dataclass(frozen=True)
class Confirmed:
    trial: int
    recorded: float  # the first objective as the search recorded it
    values: tuple[float, ...]  # the replicates' first objective, by replicate
    summary: Summary
    params: Mapping[str, Any] = field(default_factory=dict)  # what sets it apart

    def to_json(self) -> dict[str, Any]:
        s = self.summary
        return {"trial": self.trial, "recorded": self.recorded, "values": list(self.values),
                "mean": s.mean,
                # no interval, rather than one from nan to nan, when a replicate diverged
                "ci95": None if s.ci95 is None or not math.isfinite(s.ci95)
                else [s.low, s.high]}


@dataclass(frozen=True)
class ConfirmReport:
    study: str
    seeds: int
    objective: str
    maximize: bool
    configs: tuple[Confirmed, ...]
    verdict: str

    @property
    def winners_curse_pp(self) -> float:
        """The top trial's recorded value minus its replicates' mean (in the objective's
        units: points for an accuracy); positive when the search flattered it."""
        top = self.configs[0]
        sign = 1.0 if self.maximize else -1.0
        return sign * (top.recorded - top.summary.mean)

    def table(self) -> Table:
        varying = list(dict.fromkeys(k for c in self.configs for k in c.params))
        rows = [{"trial": c.trial, **{k: _shown(c.params.get(k)) for k in varying},
                 "recorded": c.recorded, "mean": c.summary.mean,
                 "low": c.summary.low, "high": c.summary.high, "n": c.summary.n}
                for c in self.configs]
        return Table(rows, ("trial", *varying, "recorded", "mean", "low", "high", "n"),
                     f"{self.objective}, {self.seeds} fresh seeds each (95% interval); "
                     f"{self.verdict}")

    def to_pandas(self) -> pd.DataFrame:
        return self.table().to_pandas()

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()

    def to_json(self) -> dict[str, Any]:
        return {"study": self.study, "seeds": self.seeds, "objective": self.objective,
                "configs": [c.to_json() for c in self.configs],
                "winners_curse_pp": self.winners_curse_pp, "verdict": self.verdict}


def confirm_spec(study: optuna.Study, top: int, seeds: int, device: str | None = None
                 ) -> tuple[StudySpec, list[FrozenTrial]]:
    """The confirm study of `study`'s `top` best configs, `seeds` replicates each, as a study
    file would say it, and the trials it confirms. Every stored config is read (and
    refused, UsageError, if it cannot train) before anything is written."""
    from ..spec import load_spec

    picked = _winners(study, top)
    configs = [_stored_config(t, device).to_dict() for t in picked]
    what = [{k: v for k, v in c.items() if k not in _HOW} for c in configs]
    fixed = {k: v for k, v in what[0].items() if all(w.get(k) == v for w in what[1:])}
    names = list(study.user_attrs.get("objectives") or
                 [study.user_attrs.get("objective") or "test_accuracy"])
    directions = [d.name.lower() for d in study.directions]
    raw: dict[str, Any] = {
        "name": confirm_study_name(study.study_name),
        "description": f"Fresh-seed replicates of the best configs of {study.study_name}.",
        "direction": directions if len(directions) > 1 else directions[0],
        "objective": names if len(names) > 1 else names[0],
        "seed": int(study.user_attrs.get("seed", 0)), "replicates": seeds,
        "sampler": {"kind": "grid"}, "fixed": fixed,
        "reference": [{"label": f"{LABEL}{t.number}", "group": "confirm",
                       **{k: v for k, v in w.items() if k not in fixed}}
                      for t, w in zip(picked, what, strict=True)],
    }
    return load_spec(raw), picked


def confirmed(study: optuna.Study, store: optuna.Study, picked: Sequence[FrozenTrial],
              seeds: int) -> ConfirmReport:
    """The report of `picked`'s replicates 1..seeds as `store` holds them (a replicate that
    diverged counts as nan, as it failed)."""
    values: dict[tuple[int, int], float] = {}
    for t in store.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        trial, rep = _replicate(t)
        if trial is None:
            continue
        if t.state == TrialState.COMPLETE and t.values:
            values[(trial, rep)] = float(t.values[0])
        elif t.user_attrs.get("fail_reason") == "nonfinite":
            values.setdefault((trial, rep), math.nan)
    varying = _varying([dict(t.user_attrs["config"]) for t in picked])
    confirmed_ = [Confirmed(t.number, float(t.values[0]),
                            tuple(values.get((t.number, r), math.nan)
                                  for r in range(1, seeds + 1)),
                            summarize([values.get((t.number, r), math.nan)
                                       for r in range(1, seeds + 1)]),
                            {k: t.user_attrs["config"].get(k) for k in varying})
                  for t in picked]
    names = list(study.user_attrs.get("objectives") or [study.user_attrs.get("objective")])
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    return ConfirmReport(study.study_name, seeds, str(names[0]), maximize, tuple(confirmed_),
                         verdict(confirmed_, maximize))


def confirmed_of(study: optuna.Study) -> list[Confirmed]:
    """The study's confirmed trials (every replicate stored), best recorded first; [] when
    none were confirmed."""
    name = study.user_attrs.get("confirm_study")
    if not name:
        return []
    try:
        store = optuna.load_study(study_name=name, storage=storage_of(study))
    except KeyError:
        return []
    values: dict[int, list[float]] = {}
    for t in store.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        trial, _ = _replicate(t)
        if trial is not None and t.values:
            values.setdefault(trial, []).append(float(t.values[0]))
    recorded = {t.number: t.values[0] for t in study.get_trials(deepcopy=False)
                if t.number in values and t.values}
    maximize = study.directions[0].name == "MAXIMIZE"
    out = [Confirmed(n, float(recorded[n]), tuple(v), summarize(v))
           for n, v in values.items() if n in recorded]
    return sorted(out, key=lambda c: -c.recorded if maximize else c.recorded)


def fail_left_running(store: optuna.Study) -> None:
    """Replicates a killed confirm of an earlier version left RUNNING without heartbeats:
    FAIL (interrupted), so their seeds are trained again. Ones with heartbeats go stale
    and are failed by the run, as any trial is."""
    for old in store.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not old.user_attrs.get("heartbeat_s"):
            storage_of(store).set_trial_user_attr(trial_id(old), "fail_reason", "interrupted")
            store.tell(old.number, state=TrialState.FAIL)  # (its worker is gone: no Trial)


def _stored_config(trial: FrozenTrial, device: str | None) -> TrainConfig:
    """The config a trial recorded, as it trains again (on `device`, if given)."""
    try:
        config = TrainConfig(**trial.user_attrs["config"])
    except (TypeError, ValueError) as exc:  # a tampered or foreign database
        raise UsageError(f"trial {trial.number}'s stored config cannot be trained again "
                         f"({' '.join(str(exc).split())[:200]}); nothing was written") from None
    return config if device is None else dataclasses.replace(config, device=device)


def _winners(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The `top` best COMPLETE trials with a config (Pareto front trials for several
    objectives, best first by the first objective); UsageError when there are too few."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "config" in t.user_attrs and t.values]
    if len(done) < max(top, 1):
        raise UsageError(f"study {study.study_name!r} has {len(done)} complete trial"
                         f"{'' if len(done) == 1 else 's'} with a stored config; --top {top} "
                         f"needs at least {max(top, 1)}")
    pool = done
    if len(study.directions) > 1:
        front = {t.number for t in study.best_trials}
        pool = [t for t in done if t.number in front]
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    return sorted(pool, key=lambda t: (-t.values[0] if maximize else t.values[0],
                                       t.number))[:top]


def _shown(value: Any) -> Any:
    return "-".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def _replicate(t: FrozenTrial) -> tuple[int | None, int]:
    """(the trial a replicate confirms, its replicate 1..N), from its label "trial-N#r";
    an earlier version's replicates carry `confirms` and a 0-based `replicate`."""
    if "confirms" in t.user_attrs:
        return int(t.user_attrs["confirms"]), int(t.user_attrs.get("replicate", 0)) + 1
    label = str(t.user_attrs.get("label") or "")
    base, _, rep = label.partition(REPLICATE_MARK)
    if not base.startswith(LABEL) or not base[len(LABEL):].isdigit():
        return None, 0
    return int(base[len(LABEL):]), int(rep) if rep.isdigit() else 1


def _varying(configs: Sequence[dict[str, Any]]) -> list[str]:
    keys = dict.fromkeys(k for c in configs for k in c if k not in _HOW)
    return [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]


def verdict(configs: Sequence[Confirmed], maximize: bool) -> str:
    """Whether the top config beats the runner-up beyond seed noise: Welch's t-test on
    their replicates, two-sided, at ALPHA."""
    if len(configs) < 2:
        return "one config confirmed: nothing to compare it with"
    a, b = configs[0], configs[1]
    if len(a.values) < 2 or len(b.values) < 2:
        return "one seed each: seed noise cannot be told apart (use --seeds 2 or more)"
    from scipy import stats

    p = float(stats.ttest_ind(a.values, b.values, equal_var=False).pvalue)
    better = (a.summary.mean > b.summary.mean) == maximize and \
        a.summary.mean != b.summary.mean
    test = f"Welch's t-test, p = {p:.3g}" if math.isfinite(p) else "Welch's t-test, no spread"
    if better and (p < ALPHA or (not math.isfinite(p))):
        return f"trial {a.trial} beats trial {b.trial} beyond seed noise ({test})"
    if not better and p < ALPHA:
        return (f"trial {b.trial}, the runner-up, does better than trial {a.trial} beyond "
                f"seed noise ({test}): the search's pick was luck")
    return f"trial {a.trial} does not beat trial {b.trial} beyond seed noise ({test})"
