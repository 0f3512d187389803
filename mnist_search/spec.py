"""Study files (studies/*.toml): what a study searches, validated before anything is stored.

A study file fixes WHAT is searched (fixed values, search space, labelled reference trials,
sampler, pruner, objective); CLI flags only change how and where it runs. Every problem is
a SpecError whose message is one line: file, key path, bad value, what is allowed.
Standard library only.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .bundled import resolve_study
from .config import CONFIG_FIELDS, ConfigError, TrainConfig, is_int, is_num
from .errors import SpecError, SpecFaults
from .space import NOT_SEARCHABLE, Space, SpaceBuilder, categorical

__all__ = ["CONSTRAINTS", "MAX_REPLICATES", "MAX_TRIALS", "OBJECTIVES", "PRUNERS",
           "REPLICATE_MARK", "Reference", "SAMPLERS", "SpecError", "StudySpec", "base_label",
           "load_spec", "reference_params"]

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
REPLICATE_MARK = "#"  # replicates of a reference are labelled "label#2", "label#3", ...


def base_label(label: str) -> str:
    """'baseline#2' -> 'baseline': replicates count as their reference."""
    return label.split(REPLICATE_MARK, 1)[0]


@dataclass(frozen=True)
class Reference:
    """A labelled trial to enqueue once: values on top of [fixed], and notebook figures."""

    label: str
    values: dict[str, Any]
    group: str = ""
    notebook_accuracy: float | None = None
    notebook_loss: tuple[float, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class StudySpec:
    path: str
    name: str
    description: str
    directions: tuple[str, ...]
    objectives: tuple[str, ...]
    seed: int
    trials: int | None
    replicates: int
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    fixed: dict[str, Any]
    search: Space
    references: tuple[Reference, ...]
    text_hash: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    overrides: Mapping[str, Any] = field(default_factory=dict)  # [fixed] values set in code
    constraints: Mapping[str, float] = field(default_factory=dict)  # CONSTRAINTS key -> cap
    warm_start: str | None = None  # "OTHER" or "OTHER:K": begin with OTHER's K best configs

    @property
    def sampler_kind(self) -> str:
        return str(self.sampler["kind"])

    @property
    def objective(self) -> str:
        """The (first) objective."""
        return self.objectives[0]

    @property
    def direction(self) -> str:
        return self.directions[0]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def selects_on_test(self) -> bool:
        """A study that *searches* on test accuracy reports an optimistic best value."""
        return "test_accuracy" in self.objectives and bool(self.search) and \
            self.sampler_kind != "grid"

    def reference(self, label: str) -> Reference | None:
        base = base_label(label)
        return next((r for r in self.references if r.label == base), None)

    def base_config(self, **overrides: Any) -> TrainConfig:
        return TrainConfig(**{**self.fixed, **overrides})

    @cached_property
    def reference_space(self) -> Space:
        """Categoricals for the fields references vary outside the search space, so every
        reference trial shows the same parameter names in the dashboard."""
        configs = [self.base_config(**r.values) for r in self.references]
        keys = sorted({k for r in self.references for k in r.values} - self.search.fields)
        return Space(tuple(categorical(k, [getattr(c, k) for c in configs]) for k in keys))

    def reference_params(self, ref: Reference) -> dict[str, Any]:
        """The Optuna parameters of a reference trial: its varied fields and searched values."""
        config = self.base_config(**ref.values)
        return {**self.reference_space.encode(config), **self.search.encode(config)}

    def with_fixed(self, **values: Any) -> StudySpec:
        """This study with [fixed] values overridden, validated as if the file said so."""
        if not values:
            return self
        raw = copy.deepcopy(dict(self.raw))
        raw["fixed"] = {**raw.get("fixed", {}), **values}
        shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
        spec = _Validator(Path(self.path), f"{self.path} with {shown}").build(raw)
        return dataclasses.replace(spec, overrides={**self.overrides, **values})


def reference_params(spec: StudySpec) -> list[dict[str, Any]]:
    """Each reference's Optuna parameters, in the file's order."""
    return [spec.reference_params(r) for r in spec.references]


def load_spec(study: str | Path | Mapping[str, Any]) -> StudySpec:
    """Read and validate a study: a study file's path, the name of a bundled study such as
    "notebook", a study file's TOML text (a string of several lines), or its contents as a
    dict (as tomllib reads it). Raise SpecError (one line) on any problem."""
    if isinstance(study, Mapping):
        return _Validator(Path(_IN_MEMORY), _IN_MEMORY).build(dict(study))
    if isinstance(study, str) and "\n" in study:
        return _from_text(study, _IN_MEMORY)
    path = resolve_study(study)
    if path.is_dir():
        raise SpecError(f"{path}: is a directory, expected a .toml study file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror})") from None
    if not text.strip():
        raise SpecError(f"{path}: empty file; expected a TOML study file (see studies/)")
    return _from_text(text, str(path))


_IN_MEMORY = "<study>"  # the source named in errors about a study given as text or a dict


def _from_text(text: str, source: str) -> StudySpec:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{source}: malformed TOML ({exc})") from None
    return _Validator(Path(source), source).build(raw)


class _Validator(SpecFaults):
    def __init__(self, path: Path, source: str) -> None:
        super().__init__(source)
        self.path = path
        self.space = SpaceBuilder(source)

    def table(self, raw: Any, key: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self.fail(key, raw, "a table")
        return dict(raw)

    def known(self, raw: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
        for key in raw:
            if key not in allowed:
                raise self.unknown(f"{where}.{key}" if where else key, allowed)

    def build(self, raw: dict[str, Any]) -> StudySpec:
        self.known(raw, TOP_KEYS, "")
        default = "study" if str(self.path) == _IN_MEMORY else self.path.stem
        name = raw.get("name", default)
        if not isinstance(name, str) or not name.strip():
            raise self.fail("name", name, "a non-empty string")
        objectives, directions = self.objectives(raw)
        seed, trials = raw.get("seed", 0), raw.get("trials")
        replicates, description = raw.get("replicates", 1), raw.get("description", "")
        self.check_counts(seed, trials, replicates)
        if not isinstance(description, str):
            raise self.fail("description", description, "a string")
        fixed = self.fixed(raw.get("fixed", {}))
        sampler = self.sampler(raw.get("sampler", {"kind": "tpe"}))
        search = self.space.build(self.table(raw.get("search", {}), "search"), fixed,
                                  sampler["kind"])
        refs = self.references(raw.get("reference", []), fixed, search)
        if sampler["kind"] == "grid":
            self.grid_configs(fixed, search)
        if "val_accuracy" in objectives and not fixed.get("val_size"):
            raise self.fail("objective", raw.get("objective"),
                            "'test_accuracy', or set fixed.val_size > 0 to hold out images")
        if len(objectives) > 1 and sampler["kind"] == "cmaes":
            raise self.fail("sampler.kind", "cmaes", "'tpe', 'random' or 'grid' for several "
                            "objectives (CMA-ES optimizes one)")
        canonical = json.dumps(raw, sort_keys=True, default=str)
        return StudySpec(
            path=str(self.path), name=name, description=description.strip(),
            directions=directions, objectives=objectives, seed=seed, trials=trials,
            replicates=replicates, sampler=sampler, pruner=self.pruner(raw.get("pruner", {})),
            fixed=fixed, search=search, references=refs,
            text_hash=hashlib.sha256(canonical.encode()).hexdigest()[:16], raw=raw,
            constraints=self.constraints(raw.get("constraints", {})),
            warm_start=self.warm_start(raw.get("warm_start")),
        )

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

    def grid_configs(self, fixed: dict[str, Any], search: Space) -> None:
        """Each grid point, on top of [fixed], must be a valid TrainConfig (a penalty_layer
        beyond a point's depth, say): a grid is enqueued whole, so a bad point is refused now,
        not in a worker."""
        for i, point in enumerate(search.grid()):
            try:
                TrainConfig(**{**fixed, **search.decode(point)})
            except ConfigError as exc:
                raise self.error(f"grid point {i} ({json.dumps(point)}): "
                                f"{exc}") from None

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
        refs: list[Reference] = []
        for i, item in enumerate(raw):
            where = f"reference[{i}]"
            item = self.table(item, where)
            label = item.get("label")
            if not isinstance(label, str) or not label.strip() or REPLICATE_MARK in label:
                raise self.fail(f"{where}.label", label, "a non-empty string without '#'")
            if any(r.label == label for r in refs):
                raise self.fail(f"{where}.label", label, "a label used only once")
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
