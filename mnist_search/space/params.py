"""The kinds of search parameter, each as one object, and the Space of a study's [search]
table: which TrainConfig fields a parameter decides, how it is suggested from an Optuna
trial (define-by-run), encoded from a config (to enqueue a reference), decoded from stored
parameters, and its grid points."""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import TrainConfig, hidden_str, parse_hidden
from .domains import DEPTH, HIDDEN, PENALTY, PENALTY_LAMBDA, WIDTH, Choices, Domain

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

__all__ = ["Architecture", "FieldParam", "Param", "Penalty", "ShapeParam", "Space",
           "categorical"]


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

    def grid_size(self) -> int:
        """How many points grid() holds, counted without making them."""
        return math.prod(len(p.grid()) for p in self.params) if self.params else 0

    def describe(self) -> list[str]:
        return [p.describe() for p in self.params]
