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

import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..config import RULES, TrainConfig
from ..data import Data, epoch_order, load_data
from ..errors import DeviceError, NonFiniteLossError
from .engine import Stack
from .model import build_mlp, parameter_count
from .pixels import PixelOrder

__all__ = ["EpochCallback", "EpochReport", "NonFiniteLossError", "OutOfTime", "StopTraining",
           "TrainResult",
           "load_for", "resolve_device", "train", "train_population"]

log = logging.getLogger(__name__)


class StopTraining(Exception):  # noqa: N818 - raised by callbacks to end one member early
    """Raised by an epoch callback to stop a run (for example, an Optuna prune)."""


class OutOfTime(Exception):  # noqa: N818 - an outcome, not a fault
    """The time budget ran out with epochs left: the member stopped at an epoch boundary."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"stopped by the time budget after epoch {epoch}")
        self.epoch = epoch


@dataclass(frozen=True)
class EpochReport:
    epoch: int  # 1-based
    train_loss: float  # mean over the epoch's batches of (cross-entropy + penalty)
    last_batch_loss: float  # what the notebook printed
    test_accuracy: float  # percent
    val_accuracy: float | None  # percent, when a holdout is used


@dataclass(frozen=True)
class TrainResult:
    config: TrainConfig
    epochs: list[EpochReport]
    test_accuracy: float  # percent, after the last epoch
    val_accuracy: float | None
    zero_fraction: float  # of the penalised layer's weights and bias, exactly 0
    small_fraction: float  # of the same, with |w| < 1e-3
    parameter_count: int
    seconds: float  # wall time of the whole stack this member trained in
    device: str
    data_digest: str
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    population_size: int = 1  # members trained together in that stack
    holdout_digest: str | None = None  # which train images were held out for val_accuracy

    def weights_digest(self) -> str:
        """A short SHA-256 of the trained weights' bytes: equal digests, bit-identical models."""
        h = hashlib.sha256()
        for key in sorted(self.state_dict):
            h.update(key.encode())
            h.update(self.state_dict[key].contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    @property
    def member_seconds(self) -> float:
        """This member's share of the stack's wall time."""
        return self.seconds / self.population_size

    @property
    def train_loss(self) -> list[float]:
        return [e.train_loss for e in self.epochs]

    def model(self) -> torch.nn.Module:
        m = build_mlp(self.config.hidden, self.config.dropout, self.config.dropout_after)
        m.load_state_dict(self.state_dict)
        return m.eval()


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
                     ) -> list[TrainResult | BaseException]:
    """Train P configs of one shape together. A member that diverges or is stopped by the
    callback drops out (its entry is the exception); the others go on. Once `deadline`
    (a time.time()) has passed, members with epochs left stop at the next epoch boundary
    (their entry is OutOfTime). `between_batches` is called after every step: a caller's
    place to stop the whole run by raising."""
    if not configs:
        return []
    if len({c.stack_key() for c in configs}) != 1:
        raise ValueError("train_population needs configs of one shape (TrainConfig.stack_key)")
    c0 = configs[0]
    device = resolve_device(c0.device)
    data = data if data is not None else load_for(c0, device)
    start = time.perf_counter()
    stack = Stack(configs, device, c0.epochs * math.ceil(len(data.train) / c0.batch_size),
                  pixel_order(data, device, c0.batch_size))
    outcomes: list[TrainResult | BaseException | None] = [None] * len(configs)
    history: list[list[EpochReport]] = [[] for _ in configs]
    # One batch-order stream per distinct (order seed, epochs skipped); members that share
    # it share the very same permutation object, which lets the stack gather each batch once.
    orders = [(c.seed if c.order_seed is None else c.order_seed, c.order_skip) for c in configs]
    gens = {key: order_stream(key[0], key[1], len(data.train)) for key in dict.fromkeys(orders)}
    for epoch in range(1, c0.epochs + 1):
        perm_of = {key: epoch_order(len(data.train), g) for key, g in gens.items()}
        reports = epoch_reports(stack, data, [perm_of[key] for key in orders], c0.batch_size,
                                epoch, between_batches)
        for member, rep in reports.items():
            history[member].append(rep)
            try:
                if not math.isfinite(rep.train_loss):
                    raise NonFiniteLossError(epoch, rep.train_loss)
                if on_epoch is not None:
                    on_epoch(member, rep)
            except (NonFiniteLossError, StopTraining) as exc:
                outcomes[member] = exc
        if deadline is not None and epoch < c0.epochs and time.time() >= deadline:
            for member in stack.members:
                outcomes[member] = outcomes[member] or OutOfTime(epoch)
        stack.drop([m for m in stack.members if outcomes[m] is not None])
        if not stack.members:
            break
    seconds = time.perf_counter() - start
    for pos, member in enumerate(stack.members):
        outcomes[member] = member_result(stack, pos, configs[member], history[member],
                                         seconds, data, len(configs))
    return [o if o is not None else RuntimeError("member lost") for o in outcomes]


def final_accuracy(stack: Stack, pos: int, config: TrainConfig, data: Data
                   ) -> tuple[float, float | None]:
    """(test, val) accuracy of member `pos` scored alone, as a saved copy of it would be.

    Inside a wider stack the fused first-layer GEMM rounds differently, which can flip a
    near-tie between two classes; a member's recorded accuracy must be what `evaluate`
    finds for its file, so it is scored by itself.
    """
    alone = stack if len(stack.members) == 1 else \
        Stack.alone(config, stack.linears(pos), stack.device)
    apos = 0 if alone is not stack else pos
    test = alone.accuracy(data.test)[apos]
    val = alone.accuracy(data.val)[apos] if data.val is not None else None
    return test, val


def pixel_order(data: Data, device: str, batch_size: int) -> PixelOrder | None:
    """On a CPU, batches leave out their trailing blank pixels (PixelOrder), where that
    pays; a GPU gains nothing from it, and the prefix length would sync it every batch."""
    if device != "cpu":
        return None
    pixels = PixelOrder.of(data.train)
    return pixels if pixels.pays(batch_size) else None


def order_stream(seed: int, skip: int, n: int) -> torch.Generator:
    """The batch-order generator of `seed`, past its first `skip` epochs."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(skip):
        epoch_order(n, gen)
    return gen


def epoch_reports(stack: Stack, data: Data, perms: list[torch.Tensor], batch_size: int,
                  epoch: int, between_batches: Callable[[], None] | None
                  ) -> dict[int, EpochReport]:
    """One epoch of every live member, then its accuracies: a report per member."""
    loss_sum, last = stack.run_epoch(data.train, perms, batch_size, between_batches)
    return reports_of(stack, data, loss_sum, last, batch_size, epoch)


def reports_of(stack: Stack, data: Data, loss_sum: list[float], last: list[float],
               batch_size: int, epoch: int) -> dict[int, EpochReport]:
    """Reports of an epoch the stack has trained (its loss sums and last-batch losses)."""
    n_batches = math.ceil(len(data.train) / batch_size)
    test_acc = stack.accuracy(data.test)
    val_acc = stack.accuracy(data.val) if data.val is not None else None
    return {member: EpochReport(epoch, loss_sum[pos] / n_batches, last[pos], test_acc[pos],
                                None if val_acc is None else val_acc[pos])
            for pos, member in enumerate(stack.members)}


def member_result(stack: Stack, pos: int, config: TrainConfig, history: list[EpochReport],
                  seconds: float, data: Data, population: int) -> TrainResult:
    """Member `pos`'s TrainResult, its final accuracies scored alone."""
    zero, small = stack.sparsity(pos)
    test, val = final_accuracy(stack, pos, config, data)
    return TrainResult(
        config=config, epochs=history, test_accuracy=test,
        val_accuracy=val, zero_fraction=zero, small_fraction=small,
        parameter_count=parameter_count(config.hidden), seconds=seconds,
        device=stack.device, data_digest=data.digest, state_dict=stack.state_dict(pos, config),
        population_size=population, holdout_digest=data.holdout_digest)
