"""Training: TrainConfig in, TrainResult out. Knows nothing of Optuna.

The step is written out by hand (forward, cross-entropy gradient, backward, SGD with
momentum) over a *stack* of P models that share an architecture, so one code path trains a
single trial (P = 1) or a population of trials at once. Each member keeps its own seed,
batch order, dropout masks, lr, momentum and penalty, so a member's result does not depend
on which other trials it was stacked with. Writing the step out skips autograd's per-op
bookkeeping, which dominates at batch 64 on a CPU; tests check it against a plain
nn.Module + torch.optim.SGD loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

from ..config import RULES, TrainConfig
from ..data import Data, load_data
from ..errors import DeviceError, NonFiniteLossError
from .epochs import EpochReport, OutOfTime, StopTraining, TrainResult
from .population import Outcome, Population

__all__ = ["EpochCallback", "EpochReport", "NonFiniteLossError", "OutOfTime", "StopTraining",
           "TrainResult", "load_for", "resolve_device", "train", "train_population"]

log = logging.getLogger(__name__)


EpochCallback = Callable[[int, EpochReport], None]  # (member index, report); may raise Stop


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'; an unknown or unavailable device is a
    DeviceError."""
    check, allowed = RULES["device"]
    if not check(device):
        raise DeviceError(f"device {device!r} is not known: expected {allowed}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} was asked for but CUDA is not available here")
    if device == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device 'mps' was asked for but MPS is not available here")
    return device


def train(config: TrainConfig, data: Data | None = None,
          on_epoch: Callable[[EpochReport], None] | None = None) -> TrainResult:
    """Train one model; raise NonFiniteLossError if its loss diverges."""
    cb = None if on_epoch is None else (lambda _i, rep: on_epoch(rep))
    outcome = train_population([config], data, cb)[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def load_for(config: TrainConfig, device: str) -> Data:
    # The holdout is seeded by a constant, not the trial seed, so every trial of a study
    # is scored on the same validation images.
    return load_data(config.dataset, val_size=config.val_size, val_seed=0, device=device,
                     normalize=config.normalize)


def train_population(configs: Sequence[TrainConfig], data: Data | None = None,
                     on_epoch: EpochCallback | None = None, *, deadline: float | None = None,
                     between_batches: Callable[[], None] | None = None,
                     use_graphs: bool = True) -> list[TrainResult | BaseException]:
    """Train P configs of one shape together. A member that diverges or is stopped by the
    callback drops out (its entry is the exception); the others go on. Once `deadline`
    (a time.time()) has passed, members with epochs left stop at the next epoch boundary
    (their entry is OutOfTime). `between_batches` is called after every step: a caller's
    place to stop the whole run by raising. `use_graphs=False` runs a GPU's steps eagerly
    instead of replaying them as a CUDA graph (the same bits, slower)."""
    if not configs:
        return []
    if len({c.stack_key() for c in configs}) != 1:
        raise ValueError("train_population needs configs of one shape (TrainConfig.stack_key)")
    device = resolve_device(configs[0].device)
    data = data if data is not None else load_for(configs[0], device)
    # One group of a population, each member on its own batch order as its config says.
    population = Population[int](data, device, order_seed=None, use_graphs=use_graphs)
    population.add(list(enumerate(configs)), as_given=True)
    outcomes: dict[int, Outcome] = {}
    while len(population):
        outcomes.update(population.run_epoch(on_epoch, deadline=deadline,
                                             between_batches=between_batches))
    return [outcomes[i] for i in range(len(configs))]
