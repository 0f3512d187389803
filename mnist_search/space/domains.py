"""Search-parameter names, what each key may be, and the two domains a parameter draws from:
a numeric range (Optuna's Int/FloatDistribution) or a list of choices (a categorical, and a
grid's axis)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import CONFIG_FIELDS, is_num

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

__all__ = ["CATEGORICAL_ONLY", "CLASHES", "DEPTH", "HIDDEN", "INT_KEYS", "NOT_SEARCHABLE",
           "PENALTIES", "PENALTY", "PENALTY_LAMBDA", "SEARCH_KEYS", "WIDTH", "Choices",
           "Domain", "Range"]

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
