"""Study files (studies/*.toml): what a study searches, validated before anything is stored.

A study file fixes WHAT is searched (fixed values, search space, labelled reference trials,
sampler, pruner, objective); CLI flags only change how and where it runs. Every problem is
a SpecError whose message is one line: file, key path, bad value, what is allowed.
Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import CONFIG_FIELDS, RULES, ConfigError, TrainConfig, _is_int, _is_num

SAMPLERS = ("grid", "tpe", "random", "cmaes")
PRUNERS = ("none", "median", "hyperband")
OBJECTIVES = ("test_accuracy", "val_accuracy")
PENALTIES = ("none", "l1", "l2")
TOP_KEYS = ("name", "description", "direction", "objective", "seed", "trials", "replicates",
            "sampler", "pruner", "fixed", "search", "reference")
REF_META = ("label", "group", "notebook_accuracy", "notebook_loss", "note")
# Search parameters that are not TrainConfig fields; depth/width expand to width_1..width_N.
DERIVED = ("depth", "width", "penalty", "penalty_lambda")
# Fields a study may not search: they say where/how a run happens, or identify it.
NOT_SEARCHABLE = ("seed", "device", "dataset", "val_size", "normalize", "order_seed")
INT_PARAMS = ("depth", "width", "batch_size", "epochs", "penalty_layer")


class SpecError(ValueError):
    """A study file problem, as one line."""


@dataclass(frozen=True)
class Param:
    """One search parameter: a range (low/high[/log/step]) or a list of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    @property
    def is_int(self) -> bool:
        return self.name in INT_PARAMS


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
    direction: str
    objective: str
    seed: int
    trials: int | None
    replicates: int
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    fixed: dict[str, Any]
    search: dict[str, Param]
    references: tuple[Reference, ...]
    text_hash: str = field(default="")

    @property
    def sampler_kind(self) -> str:
        return self.sampler["kind"]

    def reference(self, label: str) -> Reference | None:
        base = label.split("#", 1)[0]  # replicates are "label#2", "label#3", ...
        return next((r for r in self.references if r.label == base), None)

    def base_config(self, **overrides: Any) -> TrainConfig:
        return TrainConfig(**{**self.fixed, **overrides})


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study file; raise SpecError (one line) on any problem."""
    path = Path(path)
    if not path.exists():
        raise SpecError(f"{path}: no such study file")
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
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: malformed TOML ({exc})") from None
    return _Validator(path).build(raw)


def _fail(path: Path, key: str, value: Any, allowed: str) -> SpecError:
    return SpecError(f"{path}: {key} = {_show(value)} is not allowed: expected {allowed}")


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (str, list, dict, bool)) else repr(value)


class _Validator:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, value: Any, allowed: str) -> SpecError:
        return _fail(self.path, key, value, allowed)

    def table(self, raw: Any, key: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self.fail(key, raw, "a table")
        return raw

    def known(self, raw: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
        for key in raw:
            if key not in allowed:
                prefix = f"{where}." if where else ""
                raise SpecError(f"{self.path}: unknown key {prefix}{key}; expected one of "
                                f"{', '.join(allowed)}")

    def build(self, raw: dict[str, Any]) -> StudySpec:
        self.known(raw, TOP_KEYS, "")
        name = raw.get("name", self.path.stem)
        if not isinstance(name, str) or not name.strip():
            raise self.fail("name", name, "a non-empty string")
        direction = raw.get("direction", "maximize")
        if direction not in ("maximize", "minimize"):
            raise self.fail("direction", direction, "'maximize' or 'minimize'")
        objective = raw.get("objective", "test_accuracy")
        if objective not in OBJECTIVES:
            raise self.fail("objective", objective, " or ".join(map(repr, OBJECTIVES)))
        seed = raw.get("seed", 0)
        if not (_is_int(seed) and seed >= 0):
            raise self.fail("seed", seed, "an integer >= 0")
        trials = raw.get("trials")
        if trials is not None and not (_is_int(trials) and trials >= 1):
            raise self.fail("trials", trials, "an integer >= 1")
        replicates = raw.get("replicates", 1)
        if not (_is_int(replicates) and replicates >= 1):
            raise self.fail("replicates", replicates, "an integer >= 1")
        description = raw.get("description", "")
        if not isinstance(description, str):
            raise self.fail("description", description, "a string")
        fixed = self.fixed(raw.get("fixed", {}))
        sampler = self.sampler(raw.get("sampler", {"kind": "tpe"}))
        search = self.search(raw.get("search", {}), fixed, sampler["kind"])
        refs = self.references(raw.get("reference", []), fixed, search)
        if objective == "val_accuracy" and not fixed.get("val_size"):
            raise self.fail("objective", objective,
                            "'test_accuracy', or set fixed.val_size > 0 to hold out images")
        canonical = json.dumps(raw, sort_keys=True, default=str)
        return StudySpec(
            path=str(self.path), name=name, description=description.strip(),
            direction=direction, objective=objective, seed=seed, trials=trials,
            replicates=replicates, sampler=sampler, pruner=self.pruner(raw.get("pruner", {})),
            fixed=fixed, search=search, references=refs,
            text_hash=hashlib.sha256(canonical.encode()).hexdigest()[:16],
        )

    def fixed(self, raw: Any) -> dict[str, Any]:
        raw = self.table(raw, "fixed")
        self.known(raw, CONFIG_FIELDS, "fixed")
        try:
            TrainConfig(**raw)
        except ConfigError as exc:
            raise self.fail(f"fixed.{exc.key}", exc.value, exc.allowed) from None
        except TypeError as exc:
            raise SpecError(f"{self.path}: fixed: {exc}") from None
        return dict(raw)

    def sampler(self, raw: Any) -> dict[str, Any]:
        raw = dict(self.table(raw, "sampler"))
        self.known(raw, ("kind", "seed", "n_startup_trials"), "sampler")
        if raw.setdefault("kind", "tpe") not in SAMPLERS:
            raise self.fail("sampler.kind", raw["kind"], ", ".join(SAMPLERS))
        for key in ("seed", "n_startup_trials"):
            if key in raw and not (_is_int(raw[key]) and raw[key] >= 0):
                raise self.fail(f"sampler.{key}", raw[key], "an integer >= 0")
        return raw

    def pruner(self, raw: Any) -> dict[str, Any]:
        raw = dict(self.table(raw, "pruner"))
        self.known(raw, ("kind", "n_startup_trials", "n_warmup_steps", "min_resource",
                         "reduction_factor"), "pruner")
        if raw.setdefault("kind", "none") not in PRUNERS:
            raise self.fail("pruner.kind", raw["kind"], ", ".join(PRUNERS))
        for key, value in raw.items():
            if key != "kind" and not (_is_int(value) and value >= (2 if "factor" in key else 0)):
                raise self.fail(f"pruner.{key}", value, "a non-negative integer")
        return raw

    def search(self, raw: Any, fixed: dict[str, Any], sampler: str) -> dict[str, Param]:
        raw = self.table(raw, "search")
        allowed = tuple(f for f in CONFIG_FIELDS if f not in NOT_SEARCHABLE) + DERIVED
        self.known(raw, allowed, "search")
        params: dict[str, Param] = {}
        for name, value in raw.items():
            key = f"search.{name}"
            clash = _CLASHES.get(name, (name,))
            if any(c in fixed for c in clash):
                raise SpecError(f"{self.path}: {key} is also set in [fixed] "
                                f"({', '.join(c for c in clash if c in fixed)}); "
                                "a key is either fixed or searched")
            params[name] = self.param(name, key, value, sampler)
        if ("depth" in params) != ("width" in params):
            raise SpecError(f"{self.path}: search.depth and search.width go together "
                            "(width_1..width_depth are suggested from the width range)")
        if "depth" in params and "hidden" in params:
            raise SpecError(f"{self.path}: search.hidden and search.depth/width both set the "
                            "architecture; keep one")
        if "penalty" in params and set(params["penalty"].choices) - {"none"} and \
                "penalty_lambda" not in params:
            raise SpecError(f"{self.path}: search.penalty needs search.penalty_lambda "
                            "(the lambda of the chosen l1 or l2 penalty)")
        if "penalty_lambda" in params and "penalty" not in params:
            raise SpecError(f"{self.path}: search.penalty_lambda needs search.penalty "
                            "(none, l1, l2)")
        if sampler == "grid" and ("depth" in params):
            raise SpecError(f"{self.path}: search.depth/width cannot be a grid; use "
                            "search.hidden = [[128, 64], [256, 128]] instead")
        return params

    def param(self, name: str, key: str, value: Any, sampler: str) -> Param:
        if isinstance(value, list):
            if not value:
                raise self.fail(key, value, "a non-empty list of values")
            for i, choice in enumerate(value):
                self.check_value(name, f"{key}[{i}]", choice)
            choices = tuple(tuple(c) if isinstance(c, list) else c for c in value)
            if len(set(choices)) != len(choices):
                raise self.fail(key, value, "a list without repeated values")
            return Param(name, choices=choices)
        if sampler == "grid":
            raise self.fail(key, value, "a list of values (sampler.kind = 'grid' needs grids)")
        if not isinstance(value, dict):
            raise self.fail(key, value, "a list of choices or a range {low, high[, log, step]}")
        self.known(value, ("low", "high", "log", "step"), key)
        if name in ("penalty", "dropout_after", "hidden"):
            raise self.fail(key, value, f"a list of choices ({name} is categorical)")
        low, high, log = value.get("low"), value.get("high"), value.get("log", False)
        for end, v in (("low", low), ("high", high)):
            if v is None:
                raise SpecError(f"{self.path}: {key}.{end} is missing")
            if name in INT_PARAMS and not _is_int(v):
                raise self.fail(f"{key}.{end}", v, "an integer")
            self.check_value(name, f"{key}.{end}", v)
        if not isinstance(log, bool):
            raise self.fail(f"{key}.log", log, "true or false")
        if not low < high:
            raise self.fail(f"{key}.low", low, f"a value below high ({high})")
        if log and low <= 0:
            raise self.fail(f"{key}.low", low, "a value > 0 for a log range")
        step = value.get("step")
        if step is not None and (not _is_num(step) or step <= 0 or (log and step)):
            raise self.fail(f"{key}.step", step, "a number > 0, and no step with log")
        return Param(name, low=low, high=high, log=log, step=step)

    def check_value(self, name: str, key: str, value: Any) -> None:
        if name == "penalty":
            if value not in PENALTIES:
                raise self.fail(key, value, " or ".join(map(repr, PENALTIES)))
        elif name in ("depth", "width"):
            if not (_is_int(value) and value >= 1):
                raise self.fail(key, value, "an integer >= 1")
        elif name == "penalty_lambda":
            if not (_is_num(value) and value >= 0):
                raise self.fail(key, value, "a number >= 0")
        else:
            check, allowed = RULES[name]
            if isinstance(value, float) and math.isnan(value) or not check(value):
                raise self.fail(key, value, allowed)

    def references(self, raw: Any, fixed: dict[str, Any], search: dict[str, Param]
                   ) -> tuple[Reference, ...]:
        if not isinstance(raw, list):
            raise self.fail("reference", raw, "an array of tables ([[reference]])")
        refs: list[Reference] = []
        for i, item in enumerate(raw):
            where = f"reference[{i}]"
            item = self.table(item, where)
            label = item.get("label")
            if not isinstance(label, str) or not label.strip() or "#" in label:
                raise self.fail(f"{where}.label", label, "a non-empty string without '#'")
            if any(r.label == label for r in refs):
                raise self.fail(f"{where}.label", label, "a label used only once")
            values = {k: v for k, v in item.items() if k not in REF_META}
            self.known(item, REF_META + CONFIG_FIELDS, where)
            refs.append(self.reference(where, item, label, values, fixed, search))
        return tuple(refs)

    def reference(self, where: str, item: dict[str, Any], label: str, values: dict[str, Any],
                  fixed: dict[str, Any], search: dict[str, Param]) -> Reference:
        for k in values:
            if k in NOT_SEARCHABLE:
                raise self.fail(f"{where}.{k}", values[k],
                                f"no {k} here (set it in [fixed] or on the command line)")
        try:
            config = TrainConfig(**{**fixed, **values})
        except ConfigError as exc:
            raise self.fail(f"{where}.{exc.key}", exc.value, exc.allowed) from None
        try:
            searched_values(config, search)
        except ValueError as exc:
            raise SpecError(f"{self.path}: {where}: {exc}") from None
        acc = item.get("notebook_accuracy")
        if acc is not None and not (_is_num(acc) and 0 <= acc <= 100):
            raise self.fail(f"{where}.notebook_accuracy", acc, "a percentage in [0, 100]")
        loss = item.get("notebook_loss", [])
        if not (isinstance(loss, list) and all(_is_num(x) for x in loss)):
            raise self.fail(f"{where}.notebook_loss", loss, "a list of numbers")
        return Reference(label=label, values=values, group=str(item.get("group", "")),
                         notebook_accuracy=acc, notebook_loss=tuple(loss),
                         note=str(item.get("note", "")))


# A searched name and the [fixed] keys it would contradict.
_CLASHES = {
    "depth": ("hidden",), "width": ("hidden",), "hidden": ("hidden",),
    "penalty": ("l1", "l2"), "penalty_lambda": ("l1", "l2"),
}


def hidden_str(hidden: tuple[int, ...] | list[int]) -> str:
    """(128, 64) -> '128-64': how an architecture reads as a categorical parameter."""
    return "-".join(str(w) for w in hidden)


def searched_values(config: TrainConfig, search: dict[str, Param]) -> dict[str, Any]:
    """The search-parameter values that reproduce `config` (for enqueueing a reference).

    Raises ValueError if the config cannot be expressed in this search space.
    """
    out: dict[str, Any] = {}
    for name, p in search.items():
        if name == "depth":
            out["depth"] = len(config.hidden)
            for i, w in enumerate(config.hidden, 1):
                out[f"width_{i}"] = w
                _within(search["width"], w, f"width_{i}")
            _within(p, len(config.hidden), "depth")
        elif name == "width":
            continue
        elif name == "penalty":
            if config.l1 > 0 and config.l2 > 0:
                raise ValueError("l1 and l2 both set, but search.penalty picks one of them")
            kind = "l1" if config.l1 > 0 else "l2" if config.l2 > 0 else "none"
            out["penalty"] = kind
            _within(p, kind, "penalty")
            if kind != "none" and "penalty_lambda" in search:
                out["penalty_lambda"] = config.l1 or config.l2
                _within(search["penalty_lambda"], out["penalty_lambda"], "penalty_lambda")
        elif name == "penalty_lambda":
            continue
        else:
            value = getattr(config, name)
            out[name] = hidden_str(value) if name == "hidden" else value
            _within(p, tuple(value) if name == "hidden" else value, name)
    return out


def _within(p: Param, value: Any, label: str) -> None:
    if p.choices is not None:
        if value not in p.choices:
            raise ValueError(f"{label} = {value!r} is not one of the searched choices")
    elif not (p.low <= value <= p.high):
        raise ValueError(f"{label} = {value!r} is outside the searched range "
                         f"[{p.low}, {p.high}]")


def reference_params(spec: StudySpec) -> tuple[dict[str, tuple[Any, ...]], list[dict[str, Any]]]:
    """Categorical choices for the keys references vary outside the search space, and each
    reference's full parameter dict (those keys plus its searched values).

    Every reference trial shows the same parameter names in the dashboard.
    """
    configs = [spec.base_config(**r.values) for r in spec.references]
    covered = set(spec.search)
    if "depth" in covered:
        covered.add("hidden")
    if "penalty" in covered:
        covered |= {"l1", "l2"}
    keys = sorted({k for r in spec.references for k in r.values} - covered)
    as_param = {k: [hidden_str(getattr(c, k)) if k == "hidden" else getattr(c, k)
                    for c in configs] for k in keys}
    choices = {k: tuple(sorted(set(v), key=lambda x: (str(type(x)), x))) for k, v in
               as_param.items()}
    params = [{**{k: as_param[k][i] for k in keys}, **searched_values(c, spec.search)}
              for i, c in enumerate(configs)]
    return choices, params
