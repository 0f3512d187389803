"""Confirm a search's winners: retrain its best configs with fresh seeds, apart from it.

A search picks its best trial from single runs, so the pick is optimistic (the winner's
curse): among many configs, the one selected is likely one whose seed happened to be kind.
confirm() retrains the K best configs (for several objectives, up to K trials of the
Pareto front) with N fresh seeds each, the replicates of one config as one stack, and
reports each config's mean and 95% interval, the winner's curse and whether the top config
beats the runner-up beyond seed noise (Welch's t-test).

The replicates are stored in a study of their own, "<study>-confirm", in the same storage:
the searched study's best trial, its trial count and what its sampler learns from stay as
they were, while the dashboard, `show`, `report` and `rerun` can read them (each replicate
is labelled "trial-N" after the trial it confirms). Running confirm again reuses the
replicates already stored and trains only the missing seeds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..config import TrainConfig
from ..errors import UsageError
from ..live import Display, live_display
from ..stats import Summary, summarize
from ..tables import Table
from .internals import storage_of, trial_id
from .lifecycle import fail, metric_values
from .records import record_result
from .writes import set_user_attrs

if TYPE_CHECKING:
    import pandas as pd

    from ..training.epochs import EpochReport
    from ..training.train import EpochCallback

__all__ = ["ALPHA", "CONFIRM_SUFFIX", "ConfirmReport", "Confirmed", "confirm",
           "confirm_study_name", "replicate_seed", "verdict"]

CONFIRM_SUFFIX = "-confirm"
ALPHA = 0.05  # the verdict's significance level


def confirm_study_name(study_name: str) -> str:
    return study_name + CONFIRM_SUFFIX


def replicate_seed(seed: int, replicate: int) -> int:
    """Replicate r's seed: fresh (never the trial's own), and the same on every run."""
    digest = hashlib.sha256(f"{seed}/confirm/{replicate}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**31 - 1)


@dataclass(frozen=True)
class Confirmed:
    trial: int
    recorded: float  # the first objective as the search recorded it
    values: tuple[float, ...]  # the replicates' first objective, by replicate
    summary: Summary

    def to_json(self) -> dict[str, Any]:
        s = self.summary
        return {"trial": self.trial, "recorded": self.recorded, "values": list(self.values),
                "mean": s.mean, "ci95": None if s.ci95 is None else [s.low, s.high]}


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
        rows = [{"trial": c.trial, "recorded": c.recorded, "mean": c.summary.mean,
                 "low": c.summary.low, "high": c.summary.high, "n": c.summary.n}
                for c in self.configs]
        return Table(rows, ("trial", "recorded", "mean", "low", "high", "n"),
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


def confirm(study: optuna.Study, *, top: int = 1, seeds: int = 3, device: str | None = None,
            progress: bool | None = None) -> ConfirmReport:
    """Retrain the `top` best configs of `study` with `seeds` fresh seeds each.

    Progress (epochs trained, the replicate's loss) is a live display in a notebook cell or
    a bar on a terminal; `progress=False` shows nothing, True shows it anywhere.
    """
    from ..training.train import load_for, resolve_device

    picked = _winners(study, top)
    names = list(study.user_attrs.get("objectives") or [study.user_attrs.get("objective")])
    configs = [_stored_config(t, device) for t in picked]  # all readable before any write
    store = _confirm_study(study)
    confirmed = []
    display = live_display(store.study_name, sum(c.epochs for c in configs) * seeds, "epoch",
                           progress)
    try:
        for trial, config in zip(picked, configs, strict=True):
            data = load_for(config, resolve_device(config.device))
            values = _replicates(store, trial, config, seeds, names, data, display)
            confirmed.append(Confirmed(trial.number, float(trial.values[0]), tuple(values),
                                       summarize(values)))
    finally:
        if display is not None:
            display.close()
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    return ConfirmReport(study.study_name, seeds, str(names[0]), maximize, tuple(confirmed),
                         verdict(confirmed, maximize))


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


def _confirm_study(study: optuna.Study) -> optuna.Study:
    storage = storage_of(study)
    name = confirm_study_name(study.study_name)
    store = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                directions=study.directions)
    store.set_user_attr("confirms", study.study_name)
    store.set_user_attr("objectives", study.user_attrs.get("objectives"))
    store.set_user_attr("objective", study.user_attrs.get("objective"))
    study.set_user_attr("confirm_study", name)
    return store


def _ticker(display: Display | None, trial: int, replicates: Sequence[int], epochs: int
            ) -> EpochCallback | None:
    """The training callback that moves `display` on by one epoch of one replicate."""
    if display is None:
        return None

    def tick(member: int, report: EpochReport) -> None:
        display.n += 1
        display.set_postfix_str(f"trial {trial}, replicate {replicates[member]}: epoch "
                                f"{report.epoch}/{epochs}, loss {report.train_loss:.4f}")
        display.refresh()
    return tick


def _replicates(store: optuna.Study, trial: FrozenTrial, config: TrainConfig, seeds: int,
                names: Sequence[str], data: Any, display: Display | None = None
                ) -> list[float]:
    """Each replicate's first objective: stored ones reused, the missing ones trained as
    one stack and told to the confirm study."""
    from ..training.train import TrainResult, train_population

    have: dict[int, float] = {}
    for old in store.get_trials(deepcopy=False):
        if old.user_attrs.get("confirms") != trial.number:
            continue
        if old.state == TrialState.COMPLETE and old.values:
            have.setdefault(int(old.user_attrs["replicate"]), float(old.values[0]))
        elif old.state == TrialState.RUNNING:  # left by a confirm that was killed
            storage_of(store).set_trial_user_attr(trial_id(old), "fail_reason", "interrupted")
            store.tell(old.number, state=TrialState.FAIL)  # (its worker is gone: no Trial)
    todo = [r for r in range(seeds) if r not in have]
    if display is not None:  # the reused replicates count as trained
        display.n += (seeds - len(todo)) * config.epochs
    configs = [dataclasses.replace(config, seed=replicate_seed(config.seed, r), order_seed=None,
                                   order_skip=0, pad_hidden=None) for r in todo]
    trials = [store.ask() for _ in todo]
    for r, t, c in zip(todo, trials, configs, strict=True):
        set_user_attrs(t, {"confirms": trial.number, "replicate": r,
                           "label": f"trial-{trial.number}", "group": "confirm",
                           "seed": c.seed, "config": c.to_dict(),
                           "stack": [x.number for x in trials]})
    try:
        outcomes = train_population(configs, data, _ticker(display, trial.number, todo,
                                                           config.epochs))
    except BaseException as exc:
        for t in trials:  # interrupted or an error: FAIL with the lifecycle's reason
            fail(store, t, [], exc)
        raise
    for r, t, outcome in zip(todo, trials, outcomes, strict=True):
        if not isinstance(outcome, TrainResult):  # a replicate that diverges is a result
            fail(store, t, [], outcome)  # "nonfinite", as every trial records it
            have[r] = math.nan
            continue
        record_result(t, outcome)
        values = metric_values(names, outcome)
        store.tell(t, list(values))
        have[r] = values[0]
    return [have[r] for r in range(seeds)]


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
