"""Optimizers and learning-rate schedules over a stack's flat parameter buffer.

Each rule is torch.optim's single-tensor implementation written over one flat buffer for
all members (tests check them against torch.optim and torch.optim.lr_scheduler loops):
Adam and AdamW (betas 0.9/0.999, eps 1e-8, AdamW's decay decoupled), RMSprop (alpha 0.99,
eps 1e-8, with momentum). SGD stays in the engine, where its momentum buffer is filled by the
gradient GEMMs themselves. Members of one stack share the optimizer and the schedule; lr,
momentum and weight decay may differ per member (a scalar when shared, else a flat tensor
of each member's value at each of its parameters).

Schedules step once per batch: the lr of step t (0-based) is lr * factor(t) over the run's
total steps T = epochs x batches per epoch.
"""

from __future__ import annotations

import math

import torch

from ..config import Schedule

__all__ = ["BETA1", "BETA2", "EPS", "RMS_ALPHA", "FlatOptimizer", "add_scaled", "lr_factor"]

BETA1, BETA2, EPS, RMS_ALPHA = 0.9, 0.999, 1e-8, 0.99
ONECYCLE_PCT_START, ONECYCLE_DIV, ONECYCLE_FINAL_DIV = 0.3, 25.0, 1e4

Value = float | torch.Tensor  # one value for all members, or each member's at each parameter


def lr_factor(schedule: Schedule, step: int, total: int) -> float:
    """lr(t) / lr for `schedule` at step t of `total`.

    cosine: CosineAnnealingLR(T_max=total, eta_min=0). onecycle: OneCycleLR(max_lr=lr,
    total_steps=total, pct_start=0.3, anneal_strategy="cos", div_factor=25,
    final_div_factor=1e4, cycle_momentum=False): a warm-up from lr/25 to lr over the first
    30% of the steps, then a cosine down to lr/25e4.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return (1 + math.cos(math.pi * step / total)) / 2
    initial, low = 1.0 / ONECYCLE_DIV, 1.0 / ONECYCLE_DIV / ONECYCLE_FINAL_DIV
    phases = ((float(ONECYCLE_PCT_START * total) - 1, initial, 1.0), (total - 1, 1.0, low))
    start = 0.0
    for i, (end, a, b) in enumerate(phases):
        if step <= end or i == len(phases) - 1:
            pct = (step - start) / (end - start)
            return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)
        start = end
    raise AssertionError("unreachable")


class FlatOptimizer:
    """Adam, AdamW or RMSprop state for a flat buffer, and the update."""

    def __init__(self, kind: str, like: torch.Tensor) -> None:
        self.kind = kind
        self.steps = 0
        self.state = {"exp_avg_sq" if kind != "rmsprop" else "square_avg": torch.zeros_like(like)}
        if kind in ("adam", "adamw"):
            self.state["exp_avg"] = torch.zeros_like(like)
        else:
            self.state["momentum_buffer"] = torch.zeros_like(like)

    def step(self, p: torch.Tensor, grad: torch.Tensor, lr: Value, wd: Value,
             momentum: Value) -> None:
        """One update of p from grad (which it may change: it is the stack's scratch)."""
        self.steps += 1
        if self.kind == "adamw":
            if _nonzero(wd):
                _mul(p, 1 - lr * wd)  # decoupled: before the moments, on the parameters
            self._adam(p, grad, lr)
        elif self.kind == "adam":
            if _nonzero(wd):
                add_scaled(grad, p, wd)
            self._adam(p, grad, lr)
        else:
            if _nonzero(wd):
                add_scaled(grad, p, wd)
            self._rmsprop(p, grad, lr, momentum)

    def _adam(self, p: torch.Tensor, grad: torch.Tensor, lr: Value) -> None:
        m, v = self.state["exp_avg"], self.state["exp_avg_sq"]
        m.lerp_(grad, 1 - BETA1)
        v.mul_(BETA2).addcmul_(grad, grad, value=1 - BETA2)
        bias1 = 1 - BETA1 ** self.steps
        bias2_sqrt = (1 - BETA2 ** self.steps) ** 0.5
        denom = (v.sqrt() / bias2_sqrt).add_(EPS)
        if isinstance(lr, float):
            p.addcdiv_(m, denom, value=-(lr / bias1))
        else:
            p.addcmul_(m / denom, lr / -bias1)

    def _rmsprop(self, p: torch.Tensor, grad: torch.Tensor, lr: Value, momentum: Value) -> None:
        v, buf = self.state["square_avg"], self.state["momentum_buffer"]
        v.mul_(RMS_ALPHA).addcmul_(grad, grad, value=1 - RMS_ALPHA)
        avg = v.sqrt().add_(EPS)
        if _nonzero(momentum):
            _mul(buf, momentum).addcdiv_(grad, avg)
            add_scaled(p, buf, -lr)
        elif isinstance(lr, float):
            p.addcdiv_(grad, avg, value=-lr)
        else:
            p.addcmul_(grad / avg, -lr)


def _nonzero(value: Value) -> bool:
    return bool(value != 0) if isinstance(value, float) else bool(value.any())


def _mul(t: torch.Tensor, value: Value) -> torch.Tensor:
    return t.mul_(value)


def add_scaled(t: torch.Tensor, other: torch.Tensor, value: Value) -> torch.Tensor:
    """t += value * other, value a scalar or an elementwise tensor."""
    if isinstance(value, float):
        return t.add_(other, alpha=value)
    return t.addcmul_(other, value)
