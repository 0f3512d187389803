"""The search space: each kind of search parameter as one object.

A study file's [search] table becomes a Space of Params. Each Param knows which TrainConfig
fields it decides, how to suggest them from an Optuna trial (define-by-run), how to encode a
config back into Optuna parameters (to enqueue a reference trial), how to decode stored
parameters, and its grid points. This is the one module that knows parameter names:
`depth`/`width` (an architecture), `penalty`/`penalty_lambda` (L1 or L2 on one layer),
`hidden` (a list of shapes, stored as '128-64' strings), and plain TrainConfig fields.

Standard library only; Optuna trials are used through their suggest methods.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import (
    CONFIG_FIELDS,
    MAX_DEPTH,
    MAX_WIDTH,
    RULES,
    TrainConfig,
    hidden_str,
    is_int,
    is_num,
    parse_hidden,
)
from .errors import SpecFaults

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

__all__ = ["Architecture", "Choices", "FieldParam", "NOT_SEARCHABLE", "Param", "Penalty", "Range",
           "ShapeParam", "Space", "SpaceBuilder", "categorical"]

HIDDEN, DEPTH, WIDTH, PENALTY, PENALTY_LAMBDA = "hidden", "depth", "width", "penalty", \
    "penalty_lambda"
PENALTIES = ("none", "l1", "l2")
# Fields a study may not search: they say where/how a run happens, or identify it.
# What a trial records about how it trained (its order, its bucket) is not searched either.
NOT_SEARCHABLE = ("seed", "device", "dataset", "val_size", "normalize", "order_seed",
                  "order_skip", "pad_hidden", "matmul_precision")
DERIVED = (DEPTH, WIDTH, PENALTY, PENALTY_LAMBDA)  # search keys that are not config fields
SEARCH_KEYS = tuple(f for f in CONFIG_FIELDS if f not in NOT_SEARCHABLE) + DERIVED
INT_KEYS = (DEPTH, WIDTH, "batch_size", "epochs", "penalty_layer")
CATEGORICAL_ONLY = (PENALTY, "dropout_after", HIDDEN, "optimizer", "schedule")
# A searched key and the [fixed] keys it would contradict.
CLASHES = {DEPTH: (HIDDEN,), WIDTH: (HIDDEN,), HIDDEN: (HIDDEN,), PENALTY: ("l1", "l2"),
           PENALTY_LAMBDA: ("l1", "l2")}


# ---------------------------------------------------------------- one Optuna parameter


@dataclass(frozen=True)
class Range:
    """A numeric range: Optuna's IntDistribution or FloatDistribution."""

    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False

    def suggest(self, trial: BaseTrial, name: str) -> Any:
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high),
                                     step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def check(self, value: Any, name: str) -> None:
        if not (is_num(value) and self.low <= value <= self.high):
            raise ValueError(f"{name} = {value!r} is outside the searched range "
                             f"[{self.low}, {self.high}]")

    def values(self) -> tuple[Any, ...]:
        raise ValueError("a range has no grid points")

    def describe(self) -> str:
        extra = ", log" if self.log else f", step {self.step}" if self.step else ""
        return f"[{self.low}, {self.high}{extra}]"


@dataclass(frozen=True)
class Choices:
    """A list of values: Optuna's CategoricalDistribution (and a grid's axis)."""

    options: tuple[Any, ...]

    def suggest(self, trial: BaseTrial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.options))

    def check(self, value: Any, name: str) -> None:
        if value not in self.options:
            raise ValueError(f"{name} = {value!r} is not one of the searched choices")

    def values(self) -> tuple[Any, ...]:
        return self.options

    def describe(self) -> str:
        return "{" + ", ".join(map(str, self.options)) + "}"


Domain = Range | Choices


# ---------------------------------------------------------------- parameter kinds


class Param(ABC):
    """One kind of search parameter."""

    @property
    @abstractmethod
    def keys(self) -> tuple[str, ...]:
        """Its study-file keys."""

    @property
    @abstractmethod
    def fields(self) -> tuple[str, ...]:
        """The TrainConfig fields it decides."""

    @abstractmethod
    def suggest(self, trial: BaseTrial) -> dict[str, Any]:
        """Config values, suggested define-by-run."""

    @abstractmethod
    def encode(self, config: TrainConfig) -> dict[str, Any]:
        """The Optuna parameters that reproduce `config`; ValueError if it is outside."""

    @abstractmethod
    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Config values from stored Optuna parameters (the inverse of encode)."""

    def grid(self) -> list[dict[str, Any]]:
        """Optuna parameters of each grid point."""
        raise ValueError(f"{'/'.join(self.keys)} cannot be a grid")

    @abstractmethod
    def describe(self) -> str:
        """One line for `check` and logs."""


@dataclass(frozen=True)
class FieldParam(Param):
    """A TrainConfig field searched as it is (lr, momentum, dropout, batch_size, ...)."""

    name: str
    domain: Domain

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.name,)

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.name,)

    def suggest(self, trial: BaseTrial) -> dict[str, Any]:
        return {self.name: self.domain.suggest(trial, self.name)}

    def encode(self, config: TrainConfig) -> dict[str, Any]:
        value = getattr(config, self.name)
        self.domain.check(value, self.name)
        return {self.name: value}

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {self.name: params[self.name]}

    def grid(self) -> list[dict[str, Any]]:
        return [{self.name: v} for v in self.domain.values()]

    def describe(self) -> str:
        return f"{self.name} {self.domain.describe()}"


@dataclass(frozen=True)
class ShapeParam(Param):
    """`hidden` as a list of shapes; each is an Optuna categorical value '128-64'."""

    shapes: tuple[tuple[int, ...], ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return (HIDDEN,)

    @property
    def fields(self) -> tuple[str, ...]:
        return (HIDDEN,)

    @property
    def domain(self) -> Choices:
        return Choices(tuple(hidden_str(s) for s in self.shapes))

    def suggest(self, trial: BaseTrial) -> dict[str, Any]:
        return {HIDDEN: parse_hidden(self.domain.suggest(trial, HIDDEN))}

    def encode(self, config: TrainConfig) -> dict[str, Any]:
        value = hidden_str(config.hidden)
        self.domain.check(value, HIDDEN)
        return {HIDDEN: value}

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {HIDDEN: parse_hidden(params[HIDDEN])}

    def grid(self) -> list[dict[str, Any]]:
        return [{HIDDEN: v} for v in self.domain.values()]

    def describe(self) -> str:
        return f"hidden {self.domain.describe()}"


@dataclass(frozen=True)
class Architecture(Param):
    """Depth, then one width per layer: Optuna parameters depth, width_1 .. width_depth."""

    depth: Domain
    width: Domain

    @property
    def keys(self) -> tuple[str, ...]:
        return (DEPTH, WIDTH)

    @property
    def fields(self) -> tuple[str, ...]:
        return (HIDDEN,)

    def suggest(self, trial: BaseTrial) -> dict[str, Any]:
        depth = self.depth.suggest(trial, DEPTH)
        return {HIDDEN: tuple(self.width.suggest(trial, f"{WIDTH}_{i}")
                              for i in range(1, depth + 1))}

    def encode(self, config: TrainConfig) -> dict[str, Any]:
        out: dict[str, Any] = {DEPTH: len(config.hidden)}
        for i, w in enumerate(config.hidden, 1):
            out[f"{WIDTH}_{i}"] = w
            self.width.check(w, f"{WIDTH}_{i}")
        self.depth.check(len(config.hidden), DEPTH)
        return out

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {HIDDEN: tuple(params[f"{WIDTH}_{i}"] for i in range(1, params[DEPTH] + 1))}

    def describe(self) -> str:
        return f"depth {self.depth.describe()} x width {self.width.describe()}"


@dataclass(frozen=True)
class Penalty(Param):
    """L1 or L2 (or none) on the penalised layer, and its lambda: parameters penalty and
    penalty_lambda (the latter only when the penalty is not 'none')."""

    kinds: Choices
    lam: Domain | None

    @property
    def keys(self) -> tuple[str, ...]:
        return (PENALTY, PENALTY_LAMBDA)

    @property
    def fields(self) -> tuple[str, ...]:
        return ("l1", "l2")

    def suggest(self, trial: BaseTrial) -> dict[str, Any]:
        kind = self.kinds.suggest(trial, PENALTY)
        lam = None if kind == "none" or self.lam is None else \
            self.lam.suggest(trial, PENALTY_LAMBDA)
        return self._values(kind, lam)

    @staticmethod
    def _values(kind: str, lam: float | None) -> dict[str, Any]:
        out: dict[str, Any] = {"l1": 0.0, "l2": 0.0}
        if kind != "none" and lam is not None:
            out[kind] = lam
        return out

    def encode(self, config: TrainConfig) -> dict[str, Any]:
        if config.l1 > 0 and config.l2 > 0:
            raise ValueError("l1 and l2 both set, but search.penalty picks one of them")
        kind = "l1" if config.l1 > 0 else "l2" if config.l2 > 0 else "none"
        self.kinds.check(kind, PENALTY)
        out: dict[str, Any] = {PENALTY: kind}
        if kind != "none" and self.lam is not None:
            out[PENALTY_LAMBDA] = config.l1 or config.l2
            self.lam.check(out[PENALTY_LAMBDA], PENALTY_LAMBDA)
        return out

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self._values(params[PENALTY], params.get(PENALTY_LAMBDA))

    def grid(self) -> list[dict[str, Any]]:
        lams = self.lam.values() if self.lam is not None else ()
        return [{PENALTY: k} if k == "none" else {PENALTY: k, PENALTY_LAMBDA: lam}
                for k in self.kinds.values() for lam in (lams if k != "none" else (None,))]

    def describe(self) -> str:
        lam = "" if self.lam is None else f", lambda {self.lam.describe()}"
        return f"penalty {self.kinds.describe()}{lam}"


def categorical(name: str, values: Iterable[Any]) -> Param:
    """A categorical over the distinct config values of one field (hidden shapes become
    '128-64'), sorted by their Optuna value: stored studies hold distributions in this
    order, and Optuna refuses a categorical whose choices change."""
    if name == HIDDEN:
        return ShapeParam(tuple(parse_hidden(s) for s in sorted({hidden_str(v) for v in values})))
    return FieldParam(name, Choices(tuple(sorted(set(values), key=lambda x: (str(type(x)), x)))))


# ---------------------------------------------------------------- the space


@dataclass(frozen=True)
class Space:
    """Search parameters in study-file order."""

    params: tuple[Param, ...] = ()

    def __len__(self) -> int:
        return len(self.params)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for p in self.params for k in p.keys)

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(f for p in self.params for f in p.fields)

    def suggest(self, trial: BaseTrial) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in self.params:
            out.update(p.suggest(trial))
        return out

    def encode(self, config: TrainConfig) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in self.params:
            out.update(p.encode(config))
        return out

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in self.params:
            out.update(p.decode(params))
        return out

    def grid(self) -> list[dict[str, Any]]:
        """The cartesian product of every parameter's grid points, in file order."""
        axes = [p.grid() for p in self.params]
        return [{k: v for part in combo for k, v in part.items()}
                for combo in itertools.product(*axes)] if axes else []

    def describe(self) -> list[str]:
        return [p.describe() for p in self.params]


# ---------------------------------------------------------------- from a study file


class SpaceBuilder(SpecFaults):
    """Validate a [search] table and build its Space; every problem is a one-line SpecError
    naming the file, the key, the value and what is allowed (errors.SpecFaults)."""

    def build(self, raw: Mapping[str, Any], fixed: Mapping[str, Any], sampler: str) -> Space:
        domains: dict[str, Domain] = {}
        for name, value in raw.items():
            if name not in SEARCH_KEYS:
                raise self.unknown(f"search.{name}", SEARCH_KEYS)
            clash = CLASHES.get(name, (name,))
            if any(c in fixed for c in clash):
                raise self.error(f"search.{name} is also set in [fixed] "
                                 f"({', '.join(c for c in clash if c in fixed)}); "
                                 "a key is either fixed or searched")
            domains[name] = self.domain(name, f"search.{name}", value, sampler)
        self.check_pairs(domains, sampler)
        return Space(tuple(self.params(domains)))

    def params(self, domains: dict[str, Domain]) -> Iterable[Param]:
        for name, d in domains.items():
            if name == DEPTH:
                yield Architecture(d, domains[WIDTH])
            elif name == PENALTY:
                assert isinstance(d, Choices)  # check_value allows only lists for it
                yield Penalty(d, domains.get(PENALTY_LAMBDA))
            elif name == HIDDEN:
                assert isinstance(d, Choices)
                yield ShapeParam(d.options)
            elif name not in (WIDTH, PENALTY_LAMBDA):  # those belong to the two above
                yield FieldParam(name, d)

    def check_pairs(self, d: dict[str, Domain], sampler: str) -> None:
        if (DEPTH in d) != (WIDTH in d):
            raise self.error("search.depth and search.width go together "
                             "(width_1..width_depth are suggested from the width range)")
        if DEPTH in d and HIDDEN in d:
            raise self.error("search.hidden and search.depth/width both set the "
                             "architecture; keep one")
        penalty = d.get(PENALTY)
        if isinstance(penalty, Choices) and set(penalty.options) - {"none"} and \
                PENALTY_LAMBDA not in d:
            raise self.error("search.penalty needs search.penalty_lambda "
                             "(the lambda of the chosen l1 or l2 penalty)")
        if PENALTY_LAMBDA in d and PENALTY not in d:
            raise self.error("search.penalty_lambda needs search.penalty (none, l1, l2)")
        if sampler == "grid" and DEPTH in d:
            raise self.error("search.depth/width cannot be a grid; use "
                             "search.hidden = [[128, 64], [256, 128]] instead")

    def domain(self, name: str, key: str, value: Any, sampler: str) -> Domain:
        if isinstance(value, list):
            if not value:
                raise self.fail(key, value, "a non-empty list of values")
            for i, choice in enumerate(value):
                self.check_value(name, f"{key}[{i}]", choice)
            options = tuple(tuple(c) if isinstance(c, list) else c for c in value)
            if len(set(options)) != len(options):
                raise self.fail(key, value, "a list without repeated values")
            return Choices(options)
        if sampler == "grid":
            raise self.fail(key, value, "a list of values (sampler.kind = 'grid' needs grids)")
        if not isinstance(value, dict):
            raise self.fail(key, value, "a list of choices or a range {low, high[, log, step]}")
        for k in value:
            if k not in ("low", "high", "log", "step"):
                raise self.unknown(f"{key}.{k}", ("low", "high", "log", "step"))
        if name in CATEGORICAL_ONLY:
            raise self.fail(key, value, f"a list of choices ({name} is categorical)")
        return self.range(name, key, value)

    def range(self, name: str, key: str, value: dict[str, Any]) -> Range:
        low, high, log = value.get("low"), value.get("high"), value.get("log", False)
        for end, v in (("low", low), ("high", high)):
            if v is None:
                raise self.error(f"{key}.{end} is missing")
            if name in INT_KEYS and not is_int(v):
                raise self.fail(f"{key}.{end}", v, "an integer")
            self.check_value(name, f"{key}.{end}", v)
        assert low is not None and high is not None
        if not isinstance(log, bool):
            raise self.fail(f"{key}.log", log, "true or false")
        if not low < high:
            raise self.fail(f"{key}.low", low, f"a value below high ({high})")
        if log and low <= 0:
            raise self.fail(f"{key}.low", low, "a value > 0 for a log range")
        step = value.get("step")
        if step is not None and (not is_num(step) or step <= 0 or (log and step)):
            raise self.fail(f"{key}.step", step, "a number > 0, and no step with log")
        return Range(low, high, log=log, step=step, integer=name in INT_KEYS)

    def check_value(self, name: str, key: str, value: Any) -> None:
        if name == PENALTY:
            if value not in PENALTIES:
                raise self.fail(key, value, " or ".join(map(repr, PENALTIES)))
        elif name in (DEPTH, WIDTH):
            most = MAX_DEPTH if name == DEPTH else MAX_WIDTH
            if not (is_int(value) and 1 <= value <= most):
                raise self.fail(key, value, f"an integer in [1, {most}]")
        elif name == PENALTY_LAMBDA:
            if not (is_num(value) and value >= 0):
                raise self.fail(key, value, "a number >= 0")
        else:
            check, allowed = RULES[name]
            if isinstance(value, float) and math.isnan(value) or not check(value):
                raise self.fail(key, value, allowed)
