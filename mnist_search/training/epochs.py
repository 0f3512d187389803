"""What an epoch of a stack yields: per-member reports, results and the ways a run ends.

Shared by train_population and Population (which trains every run): a member's batch-order
stream, the CPU pixel order, reports after each epoch, and a finished member's TrainResult
with its accuracies scored alone.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..config import TrainConfig
from ..data import Data, epoch_order
from .engine import Stack
from .mlp import build_mlp, parameter_count
from .pixels import PixelOrder

__all__ = ["EpochReport", "OutOfTime", "StopTraining", "TrainResult", "epoch_reports",
           "final_accuracy", "member_result", "order_stream", "pixel_order", "reports_of"]


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


def final_accuracy(stack: Stack, pos: int, config: TrainConfig, data: Data
                   ) -> tuple[float, float | None]:
    """(test, val) accuracy of member `pos` scored alone, as a saved copy of it would be.

    Inside a wider stack the fused first-layer GEMM rounds differently, which can flip a
    near-tie between two classes; a member's recorded accuracy must be what `evaluate`
    finds for its file, so it is scored by itself (and at its own widths, if padded).
    """
    alone = stack if len(stack.members) == 1 and config.pad_hidden is None else \
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
    gen = torch.Generator(device="cpu").manual_seed(seed)  # orders: the CPU's stream
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
