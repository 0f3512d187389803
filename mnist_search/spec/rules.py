"""A study file's tables checked one by one: what each top-level key, [sampler], [pruner],
[constraints], [fixed] and each [[reference]] may hold. Every problem is a one-line
SpecError naming the file, the key, the value and what is allowed (errors.SpecFaults);
spec.study puts the checked parts together into a StudySpec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import CONFIG_FIELDS, ConfigError, TrainConfig, is_int, is_num
from ..errors import SpecFaults
from ..space import NOT_SEARCHABLE, Space, SpaceBuilder

__all__ = ["CONSTRAINTS", "MAX_PLANNED", "MAX_REPLICATES", "MAX_TRIALS", "OBJECTIVES", "PRUNERS",
           "REPLICATE_MARK", "SAMPLERS", "TOP_KEYS", "Reference", "TableChecks"]

SAMPLERS = ("grid", "tpe", "random", "cmaes", "gp")
PRUNERS = ("none", "median", "hyperband")
# What a trial can be judged by: accuracies in percent, the parameter count, and its share
# of training wall time (member_seconds). A list of them makes a multi-objective study.
OBJECTIVES = ("test_accuracy", "val_accuracy", "parameters", "train_seconds")
TOP_KEYS = ("name", "description", "direction", "objective", "seed", "trials", "replicates",
            "sampler", "pruner", "constraints", "warm_start", "fixed", "search", "reference")
# [constraints]: caps on what a trial records; a trial over one is infeasible (Optuna's
# trial.set_constraint), which the sampler learns from and best/show/report mark.
CONSTRAINTS = {"max_parameters": "parameters", "max_train_seconds": "train_seconds"}
REF_META = ("label", "group", "notebook_accuracy", "notebook_loss", "note")
MAX_TRIALS, MAX_REPLICATES = 1_000_000, 1_000  # more is a typo, not a study
# Trials a study file plans up front, (references + grid points) x replicates: each is
# validated and enqueued before anything trains, so more is hours of bookkeeping.
MAX_PLANNED = 100_000
REPLICATE_MARK = "#"  # replicates of a reference are labelled "label#2", "label#3", ...


@dataclass(frozen=True)
class Reference:
    """A labelled trial to enqueue once: values on top of [fixed], and notebook figures."""

    label: str
    values: dict[str, Any]
    group: str = ""
    notebook_accuracy: float | None = None
    notebook_loss: tuple[float, ...] = ()
    note: str = ""


class TableChecks(SpecFaults):
    """The checks of each part of a study file; the [search] table is the space's."""

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.space = SpaceBuilder(source)

    def table(self, raw: Any, key: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self.fail(key, raw, "a table")
        return dict(raw)

    def known(self, raw: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
        for key in raw:
            if key not in allowed:
                raise self.unknown(f"{where}.{key}" if where else key, allowed)

    def warm_start(self, raw: Any) -> str | None:
        ok = raw is None or (isinstance(raw, str) and raw.strip() and
                             (":" not in raw or raw.rpartition(":")[2].isdigit()
                              and int(raw.rpartition(":")[2]) >= 1))
        if not ok:
            raise self.fail("warm_start", raw, "a stored study's name, or NAME:K with K >= 1")
        return None if raw is None else str(raw)

    def constraints(self, raw: Any) -> dict[str, float]:
        table = self.table(raw, "constraints")
        self.known(table, tuple(CONSTRAINTS), "constraints")
        for key, value in table.items():
            if not (is_num(value) and value > 0):
                raise self.fail(f"constraints.{key}", value, "a number > 0")
        return {k: float(v) for k, v in table.items()}

    def objectives(self, raw: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """objective and direction: one name each, or lists of the same length."""
        objective, direction = raw.get("objective", "test_accuracy"), \
            raw.get("direction", "maximize")
        objectives = tuple(objective) if isinstance(objective, list) else (objective,)
        directions = tuple(direction) if isinstance(direction, list) else (direction,)
        allowed = " or ".join(map(repr, OBJECTIVES)) + ", or a list of them"
        if not objectives or len(set(map(str, objectives))) != len(objectives) or \
                any(o not in OBJECTIVES for o in objectives):
            raise self.fail("objective", objective, allowed + " without repeats")
        if len(directions) != len(objectives) or \
                any(d not in ("maximize", "minimize") for d in directions):
            raise self.fail("direction", direction, "'maximize' or 'minimize'" + (
                f", as a list of {len(objectives)} (one per objective)"
                if len(objectives) > 1 else ""))
        return objectives, directions

    def check_counts(self, seed: Any, trials: Any, replicates: Any) -> None:
        if not (is_int(seed) and seed >= 0):
            raise self.fail("seed", seed, "an integer >= 0")
        if trials is not None and not (is_int(trials) and 1 <= trials <= MAX_TRIALS):
            raise self.fail("trials", trials, f"an integer in [1, {MAX_TRIALS}]")
        if not (is_int(replicates) and 1 <= replicates <= MAX_REPLICATES):
            raise self.fail("replicates", replicates, f"an integer in [1, {MAX_REPLICATES}]")

    def check_planned(self, references: int, points: int, replicates: int) -> None:
        planned = (references + points) * replicates
        if planned > MAX_PLANNED:
            raise self.error(f"plans {planned:,} trials up front ((references {references:,} "
                             f"+ grid points {points:,}) x replicates {replicates:,}); "
                             f"expected at most {MAX_PLANNED:,}: split it into several studies")

    def fixed(self, raw: Any) -> dict[str, Any]:
        raw = self.table(raw, "fixed")
        self.known(raw, CONFIG_FIELDS, "fixed")
        try:
            TrainConfig(**raw)
        except ConfigError as exc:
            raise self.fail(f"fixed.{exc.key}", exc.value, exc.allowed) from None
        return dict(raw)

    def sampler(self, raw: Any) -> dict[str, Any]:
        table = self.table(raw, "sampler")
        self.known(table, ("kind", "seed", "n_startup_trials"), "sampler")
        if table.setdefault("kind", "tpe") not in SAMPLERS:
            raise self.fail("sampler.kind", table["kind"], ", ".join(SAMPLERS))
        for key in ("seed", "n_startup_trials"):
            if key in table and not (is_int(table[key]) and table[key] >= 0):
                raise self.fail(f"sampler.{key}", table[key], "an integer >= 0")
        return table

    def pruner(self, raw: Any) -> dict[str, Any]:
        table = self.table(raw, "pruner")
        self.known(table, ("kind", "n_startup_trials", "n_warmup_steps", "min_resource",
                           "reduction_factor"), "pruner")
        if table.setdefault("kind", "none") not in PRUNERS:
            raise self.fail("pruner.kind", table["kind"], ", ".join(PRUNERS))
        for key, value in table.items():
            if key != "kind" and not (is_int(value) and value >= (2 if "factor" in key else 0)):
                raise self.fail(f"pruner.{key}", value, "a non-negative integer")
        return table

    def references(self, raw: Any, fixed: dict[str, Any], search: Space
                   ) -> tuple[Reference, ...]:
        if not isinstance(raw, list):
            raise self.fail("reference", raw, "an array of tables ([[reference]])")
        if len(raw) > MAX_PLANNED:
            raise self.error(f"{len(raw):,} references; expected at most {MAX_PLANNED:,}")
        refs: list[Reference] = []
        labels: set[str] = set()
        for i, item in enumerate(raw):
            where = f"reference[{i}]"
            item = self.table(item, where)
            label = item.get("label")
            if not isinstance(label, str) or not label.strip() or REPLICATE_MARK in label:
                raise self.fail(f"{where}.label", label, "a non-empty string without '#'")
            if label in labels:
                raise self.fail(f"{where}.label", label, "a label used only once")
            labels.add(label)
            values = {k: v for k, v in item.items() if k not in REF_META}
            self.known(item, REF_META + CONFIG_FIELDS, where)
            refs.append(self.reference(where, item, label, values, fixed, search))
        return tuple(refs)

    def reference(self, where: str, item: dict[str, Any], label: str, values: dict[str, Any],
                  fixed: dict[str, Any], search: Space) -> Reference:
        for k in values:
            if k in NOT_SEARCHABLE:
                raise self.fail(f"{where}.{k}", values[k],
                                f"no {k} here (set it in [fixed] or on the command line)")
        try:
            config = TrainConfig(**{**fixed, **values})
        except ConfigError as exc:
            raise self.fail(f"{where}.{exc.key}", exc.value, exc.allowed) from None
        try:
            search.encode(config)
        except ValueError as exc:
            raise self.error(f"{where}: {exc}") from None
        acc = item.get("notebook_accuracy")
        if acc is not None and not (is_num(acc) and 0 <= acc <= 100):
            raise self.fail(f"{where}.notebook_accuracy", acc, "a percentage in [0, 100]")
        loss = item.get("notebook_loss", [])
        if not (isinstance(loss, list) and all(is_num(x) for x in loss)):
            raise self.fail(f"{where}.notebook_loss", loss, "a list of numbers")
        return Reference(label=label, values=values, group=str(item.get("group", "")),
                         notebook_accuracy=acc, notebook_loss=tuple(loss),
                         note=str(item.get("note", "")))
