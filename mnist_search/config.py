"""TrainConfig: the frozen description of one training run, and the rules each field obeys.

Standard library only, so study files can be validated (and `--help` answered) without torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from .errors import ConfigError

__all__ = ["CONFIG_FIELDS", "ConfigError", "IN_FEATURES", "MAX_BATCH", "MAX_DEPTH", "MAX_EPOCHS",
           "MAX_PARAMETERS", "MAX_WIDTH", "N_CLASSES", "OPTIMIZERS", "Optimizer",
           "RULES", "SCHEDULES", "STACK_FIELDS", "Schedule", "TrainConfig", "hidden_str", "is_int",
           "is_num", "mlp_parameters", "parse_hidden"]

DropoutPlacement = Literal["first", "all"]
Optimizer = Literal["sgd", "adam", "adamw", "rmsprop", "nadam"]
Schedule = Literal["constant", "cosine", "onecycle"]
MatmulPrecision = Literal["highest", "tf32"]
OPTIMIZERS: tuple[Optimizer, ...] = ("sgd", "adam", "adamw", "rmsprop", "nadam")
SCHEDULES: tuple[Schedule, ...] = ("constant", "cosine", "onecycle")
IN_FEATURES, N_CLASSES = 28 * 28, 10
# What fits a machine, refused up front rather than met as an allocator's error mid-run:
# a model of at most MAX_PARAMETERS (80 MB of fp32 weights, 320 MB with Adam's state), at
# most MAX_DEPTH hidden layers of at most MAX_WIDTH units, batches no larger than an
# MNIST-style training set, and a bounded number of epochs.
MAX_WIDTH, MAX_DEPTH, MAX_PARAMETERS = 16_384, 64, 20_000_000
MAX_BATCH, MAX_EPOCHS = 60_000, 10_000
MAX_ORDER_SKIP = 100_000  # epochs of a batch order a member may join after


def is_int(v: Any) -> bool:
    """An integer, and not a bool (TOML and JSON keep them apart; Python does not)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    """A finite int or float (never nan, inf or a bool)."""
    return (is_int(v) or isinstance(v, float)) and math.isfinite(v)


# The largest float32: training runs in float32, and a larger number cannot become a tensor
# (torch raises, and a lone trial's worker died of it).
FLOAT32_MAX = 3.4028234663852886e38


def _scale(v: Any) -> bool:
    """A number >= 0 that float32 holds."""
    return is_num(v) and 0 <= v <= FLOAT32_MAX


def _in(lo: float, hi: float, hi_open: bool = True) -> Callable[[Any], bool]:
    return lambda v: is_num(v) and lo <= v and (v < hi if hi_open else v <= hi)


# field -> (check, what is allowed). Used by TrainConfig and by the study-file validator,
# which checks every end of a search range against the same rule.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "hidden": (
        lambda v: isinstance(v, (list, tuple)) and 1 <= len(v) <= MAX_DEPTH
        and all(is_int(w) and 1 <= w <= MAX_WIDTH for w in v)
        and mlp_parameters(v) <= MAX_PARAMETERS,
        f"a list of 1 to {MAX_DEPTH} layer widths, each an integer in [1, {MAX_WIDTH}], "
        f"at most {MAX_PARAMETERS:,} parameters in all",
    ),
    "dropout": (_in(0.0, 1.0), "a number in [0, 1)"),
    "input_dropout": (_in(0.0, 1.0), "a number in [0, 1)"),
    "max_norm": (_scale, "a number >= 0 (0: no constraint) that float32 holds"),
    "dropout_after": (lambda v: v in ("first", "all"), "'first' or 'all'"),
    "l1": (_scale, "a number >= 0 that float32 holds (at most 3.4e38)"),
    "l2": (_scale, "a number >= 0 that float32 holds (at most 3.4e38)"),
    "penalty_layer": (lambda v: is_int(v) and v >= 1, "an integer >= 1 (2 = fc2)"),
    "lr": (lambda v: _scale(v) and v > 0, "a number > 0 that float32 holds (at most 3.4e38)"),
    "momentum": (_in(0.0, 1.0), "a number in [0, 1)"),
    "optimizer": (lambda v: v in OPTIMIZERS, " or ".join(map(repr, OPTIMIZERS))),
    "weight_decay": (_scale, "a number >= 0 that float32 holds (at most 3.4e38)"),
    "schedule": (lambda v: v in SCHEDULES, " or ".join(map(repr, SCHEDULES))),
    "batch_size": (lambda v: is_int(v) and 1 <= v <= MAX_BATCH,
                   f"an integer in [1, {MAX_BATCH}] (at most the training set)"),
    "epochs": (lambda v: is_int(v) and 1 <= v <= MAX_EPOCHS,
               f"an integer in [1, {MAX_EPOCHS}]"),
    "seed": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "device": (
        lambda v: isinstance(v, str) and (v in ("auto", "cpu", "cuda", "mps")
                                          or v.startswith("cuda:")),
        "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'",
    ),
    "dataset": (
        lambda v: isinstance(v, str) and 0 < len(v) <= 4096,  # a path, at most PATH_MAX
        "'mnist', 'fashion-mnist' or a directory holding the four IDX files",
    ),
    "val_size": (lambda v: is_int(v) and v >= 0, "an integer >= 0 (images held out of train)"),
    "normalize": (lambda v: isinstance(v, bool), "true or false"),
    # torch's generators take a signed 64-bit seed; skipping an order draws each epoch's
    # permutation, so a skip is bounded like a long population's epochs, not by patience
    "order_seed": (lambda v: v is None or (is_int(v) and 0 <= v < 2**63),
                   "an integer in [0, 2**63) or none"),
    "order_skip": (lambda v: is_int(v) and 0 <= v <= MAX_ORDER_SKIP,
                   f"an integer in [0, {MAX_ORDER_SKIP}]"),
    "pad_hidden": (
        lambda v: v is None or (isinstance(v, (list, tuple)) and 1 <= len(v) <= MAX_DEPTH
                                and all(is_int(w) and 1 <= w <= MAX_WIDTH for w in v)),
        "none, or a list of layer widths as long as hidden, each at least its width",
    ),
    "matmul_precision": (lambda v: v in ("highest", "tf32"),
                         "'highest' (full fp32) or 'tf32' (CUDA tensor cores)"),
}


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are the course notebook's baseline.

    The notebook trains 784-128-64-10 with plain SGD (lr 0.01), batch 64, 5 epochs, on
    ToTensor() pixels in [0, 1] with no normalization.
    """

    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.0
    dropout_after: DropoutPlacement = "first"  # notebook: after the first hidden ReLU only
    # Dropout on the 784 input pixels (Srivastava et al. 2014 used 0.2), drawn before the
    # hidden layers' masks from the same stream.
    input_dropout: float = 0.0
    # Max-norm: after every update, each hidden unit's incoming weight vector is rescaled to
    # L2 norm at most this, as torch.renorm does (0: no constraint).
    max_norm: float = 0.0
    l1: float = 0.0  # lambda * sum|p| over weight and bias of `penalty_layer`
    l2: float = 0.0  # lambda * sum p^2 over weight and bias of `penalty_layer`
    penalty_layer: int = 2  # 1-based index of the Linear layer; 2 is the notebook's fc2
    lr: float = 0.01
    # SGD's and RMSprop's momentum; Adam and AdamW use betas (0.9, 0.999) and ignore it.
    momentum: float = 0.0
    optimizer: Optimizer = "sgd"
    weight_decay: float = 0.0  # torch.optim's weight_decay (decoupled for AdamW), all layers
    schedule: Schedule = "constant"  # lr schedule, stepped once per batch (training/optim.py)
    batch_size: int = 64
    epochs: int = 5
    seed: int = 0
    device: str = "auto"
    dataset: str = "mnist"
    val_size: int = 0  # images carved from train as a validation holdout (0 = none)
    normalize: bool = False  # (x - mean) / std with MNIST's 0.1307 / 0.3081
    # Seed of the batch order (None: `seed`). Trials trained together as one population
    # share an order; recording it here lets such a trial be re-run alone exactly.
    order_seed: int | None = None
    # Epochs of that order drawn before this run's first: a trial that joined a running
    # population at its epoch J trains on the order's epochs J, J+1, ...
    order_skip: int = 0
    # The bucket this member trained in: its layers padded to these widths with units held
    # at exactly zero, so that trials of different widths stack (None: its own widths).
    # The model is still `hidden`; the padding changes only the summation shapes, so a
    # re-run trains in the same bucket to be bit for bit.
    pad_hidden: tuple[int, ...] | None = None
    # "tf32": float32 matrix multiplies on TF32 tensor cores (CUDA only; about 10 mantissa
    # bits per product, so weights move). "highest": full fp32, the default.
    matmul_precision: MatmulPrecision = "highest"

    def __post_init__(self) -> None:
        for name in ("hidden", "pad_hidden"):  # study files and JSON give lists
            value: Any = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("dropout", "input_dropout", "max_norm", "l1", "l2", "lr", "momentum",
                          "weight_decay") and \
                    is_int(value):
                object.__setattr__(self, f.name, float(value))
                value = float(value)
            check, allowed = RULES[f.name]
            if not check(value):
                raise ConfigError(f.name, value, allowed)
        pad = self.pad_hidden
        if pad is not None and (len(pad) != len(self.hidden) or
                                any(p < w for p, w in zip(pad, self.hidden, strict=True))):
            raise ConfigError("pad_hidden", list(pad), RULES["pad_hidden"][1])
        if self.penalty_layer > len(self.hidden) + 1:
            raise ConfigError(
                "penalty_layer", self.penalty_layer,
                f"an integer in [1, {len(self.hidden) + 1}] for {len(self.hidden)} hidden layers",
            )

    @property
    def architecture(self) -> str:
        """'784-128-64-10' style string (input and output sizes of MNIST)."""
        return hidden_str((IN_FEATURES, *self.hidden, N_CLASSES))

    @property
    def trained_hidden(self) -> tuple[int, ...]:
        """The layer widths the engine trains: the bucket's if padded, else `hidden`."""
        return self.pad_hidden or self.hidden

    def stack_key(self) -> tuple[Any, ...]:
        """Configs with equal keys can be trained together as one stacked population
        (padded members stack by their bucket, not their own widths)."""
        values = {f: getattr(self, f) for f in STACK_FIELDS}
        values["hidden"] = self.trained_hidden
        return tuple(values.values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        if self.pad_hidden is not None:
            d["pad_hidden"] = list(self.pad_hidden)
        return d


CONFIG_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(TrainConfig))
# What members of one stack must share; everything else (lr, momentum, dropout rate,
# penalties, seed) can differ per member.
STACK_FIELDS = ("hidden", "batch_size", "epochs", "device", "dataset", "val_size", "normalize",
                "dropout_after", "penalty_layer", "optimizer", "schedule", "matmul_precision")


def mlp_parameters(hidden: Sequence[int]) -> int:
    """Weights and biases of the MLP 784 -> hidden... -> 10 (here so that costing a queue
    of trials does not need torch)."""
    widths = [IN_FEATURES, *hidden, N_CLASSES]
    return sum(a * b + b for a, b in zip(widths, widths[1:], strict=False))


def hidden_str(hidden: Sequence[int]) -> str:
    """(128, 64) -> '128-64': the one string form of layer widths (a categorical parameter's
    value, an architecture's label)."""
    return "-".join(str(w) for w in hidden)


def parse_hidden(value: str) -> tuple[int, ...]:
    """'128-64' -> (128, 64); the inverse of hidden_str. ValueError if it is not one."""
    widths = tuple(int(w) for w in str(value).split("-"))
    if not widths or min(widths) < 1:
        raise ValueError(f"{value!r} is not a list of layer widths like '128-64'")
    return widths
