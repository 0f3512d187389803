"""Optimizers and learning-rate schedules over a stack's flat parameter buffer.

Each rule is a class holding its state and its update over the one flat buffer of all
members, registered by name (`@register`; config.OPTIMIZERS lists the names a study file
may give). Each is torch.optim's single-tensor implementation written over that buffer
(tests check them against torch.optim and torch.optim.lr_scheduler loops): SGD (its
momentum buffer is the stack's gradient buffer, filled by the gradient GEMMs themselves),
Adam and AdamW (betas 0.9/0.999, eps 1e-8, AdamW's decay decoupled), RMSprop (alpha 0.99,
eps 1e-8, with momentum) and NAdam (momentum decay 4e-3). Members of one stack share the rule
and the schedule; lr, momentum and weight decay may differ per member (a scalar when shared,
else a flat tensor of each member's value at each of its parameters).

Every number that changes during a run lives on the stack's device as a tensor, as
torch.optim's `capturable` does: the step count, the bias corrections, the schedule's factor
and the lr it scales. Nothing in an update reads a value back to the host, so every rule
and every schedule replays as a CUDA graph. Only a constant lr shared by all members stays
a Python float (its arithmetic, and so SGD's bits, are those of numerics version 2).

Schedules step once per batch: the lr of step t (0-based) is lr * factor(t) over the run's
total steps T = epochs x batches per epoch.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from ..config import Schedule

__all__ = ["BETA1", "BETA2", "EPS", "NADAM_MOMENTUM_DECAY", "RMS_ALPHA", "RULES", "Rule",
           "add_scaled", "lr_factor", "register"]

BETA1, BETA2, EPS, RMS_ALPHA = 0.9, 0.999, 1e-8, 0.99
NADAM_MOMENTUM_DECAY = 4e-3
ONECYCLE_PCT_START, ONECYCLE_DIV, ONECYCLE_FINAL_DIV = 0.3, 25.0, 1e4

Value = float | torch.Tensor  # one value for all members, or each member's at each parameter


def lr_factor(schedule: Schedule, step: torch.Tensor, total: int) -> torch.Tensor:
    """lr(t) / lr for `schedule` at step t (a 0-d tensor, on the stack's device) of `total`.

    cosine: CosineAnnealingLR(T_max=total, eta_min=0). onecycle: OneCycleLR(max_lr=lr,
    total_steps=total, pct_start=0.3, anneal_strategy="cos", div_factor=25,
    final_div_factor=1e4, cycle_momentum=False): a warm-up from lr/25 to lr over the first
    30% of the steps, then a cosine down to lr/25e4.
    """
    if schedule == "constant":
        return torch.ones_like(step)
    if schedule == "cosine":
        return (1 + torch.cos(step * (math.pi / total))) / 2
    initial, low = 1.0 / ONECYCLE_DIV, 1.0 / ONECYCLE_DIV / ONECYCLE_FINAL_DIV
    end = float(ONECYCLE_PCT_START * total) - 1
    warm = _cos_anneal(initial, 1.0, step / end)
    cool = _cos_anneal(1.0, low, (step - end) / (total - 1 - end))
    return torch.where(step <= end, warm, cool)


def _cos_anneal(start: float, stop: float, pct: torch.Tensor) -> torch.Tensor:
    return stop + (start - stop) / 2.0 * (torch.cos(math.pi * pct) + 1)


class Rule:
    """One optimizer's state for a flat buffer laid out like `like`, and its update.

    `state` holds tensors laid out like the buffer (they follow the members who stay when a
    stack drops some); `scalars` holds per-run numbers (0-d tensors on the device).
    `gradient_in_buffer`: the stack's second buffer holds the plain gradient (False: SGD,
    whose gradient GEMMs accumulate its momentum there).
    """

    name: ClassVar[str]
    state_names: ClassVar[tuple[str, ...]] = ()
    gradient_in_buffer: ClassVar[bool] = True

    def __init__(self, like: torch.Tensor) -> None:
        self.state = {n: torch.zeros_like(like) for n in self.state_names}
        self.scalars: dict[str, torch.Tensor] = {}

    def tensors(self) -> list[torch.Tensor]:
        """Everything an update changes, for a CUDA graph's warm-up to put back."""
        return [*self.state.values(), *self.scalars.values()]

    def update(self, p: torch.Tensor, grad: torch.Tensor, neg_lr: Value, wd: Value,
               momentum: Value, step: torch.Tensor, *, decay: bool, with_momentum: bool
               ) -> None:
        """One update of p from grad (which it may change: it is the stack's scratch).
        `neg_lr`: minus this step's lr; `step`: the updates made, this one included;
        `decay`/`with_momentum`: whether any member has weight decay / momentum."""
        raise NotImplementedError


RULES: dict[str, type[Rule]] = {}


def register(cls: type[Rule]) -> type[Rule]:
    RULES[cls.name] = cls
    return cls


@register
class SGD(Rule):
    """torch.optim.SGD(momentum, dampening=0): the gradient GEMMs already made the buffer
    beta * buf + grad, so the update adds the decay and steps."""

    name = "sgd"
    gradient_in_buffer = False

    def update(self, p: torch.Tensor, grad: torch.Tensor, neg_lr: Value, wd: Value,
               momentum: Value, step: torch.Tensor, *, decay: bool, with_momentum: bool
               ) -> None:
        if decay:  # d_p = grad + wd * p
            add_scaled(grad, p, wd)
        add_scaled(p, grad, neg_lr)


@register
class Adam(Rule):
    """torch.optim.Adam, as its capturable single-tensor path computes it."""

    name = "adam"
    state_names = ("exp_avg", "exp_avg_sq")
    decoupled: ClassVar[bool] = False

    def update(self, p: torch.Tensor, grad: torch.Tensor, neg_lr: Value, wd: Value,
               momentum: Value, step: torch.Tensor, *, decay: bool, with_momentum: bool
               ) -> None:
        if decay and self.decoupled:
            p.mul_(1 + neg_lr * wd)  # before the moments, on the parameters
        elif decay:
            add_scaled(grad, p, wd)
        m, v = self.state["exp_avg"], self.state["exp_avg_sq"]
        m.lerp_(grad, 1 - BETA1)
        v.mul_(BETA2).addcmul_(grad, grad, value=1 - BETA2)
        step_size_neg = neg_lr / (1 - BETA1 ** step)
        bias2_sqrt = (1 - BETA2 ** step).sqrt()
        denom = (v.sqrt() / (bias2_sqrt * step_size_neg)).add_(EPS / step_size_neg)
        p.addcdiv_(m, denom)


@register
class AdamW(Adam):
    name = "adamw"
    decoupled = True


@register
class RMSprop(Rule):
    """torch.optim.RMSprop(alpha=0.99, eps=1e-8, momentum, centered=False)."""

    name = "rmsprop"
    state_names = ("square_avg", "momentum_buffer")

    def update(self, p: torch.Tensor, grad: torch.Tensor, neg_lr: Value, wd: Value,
               momentum: Value, step: torch.Tensor, *, decay: bool, with_momentum: bool
               ) -> None:
        if decay:
            add_scaled(grad, p, wd)
        v, buf = self.state["square_avg"], self.state["momentum_buffer"]
        v.mul_(RMS_ALPHA).addcmul_(grad, grad, value=1 - RMS_ALPHA)
        avg = v.sqrt().add_(EPS)
        if with_momentum:
            buf.mul_(momentum).addcdiv_(grad, avg)
            add_scaled(p, buf, neg_lr)
        elif isinstance(neg_lr, float):
            p.addcdiv_(grad, avg, value=neg_lr)
        else:
            p.addcmul_(grad / avg, neg_lr)


@register
class NAdam(Rule):
    """torch.optim.NAdam(betas 0.9/0.999, eps 1e-8, momentum_decay 4e-3), decay coupled."""

    name = "nadam"
    state_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, like: torch.Tensor) -> None:
        super().__init__(like)
        self.scalars["mu_product"] = torch.ones((), device=like.device, dtype=torch.float32
                                                if like.device.type == "mps" else torch.float64)

    def update(self, p: torch.Tensor, grad: torch.Tensor, neg_lr: Value, wd: Value,
               momentum: Value, step: torch.Tensor, *, decay: bool, with_momentum: bool
               ) -> None:
        if decay:
            add_scaled(grad, p, wd)
        m, v, mu_product = self.state["exp_avg"], self.state["exp_avg_sq"], \
            self.scalars["mu_product"]
        mu = BETA1 * (1.0 - 0.5 * (0.96 ** (step * NADAM_MOMENTUM_DECAY)))
        mu_next = BETA1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * NADAM_MOMENTUM_DECAY)))
        mu_product.mul_(mu)
        m.lerp_(grad, 1 - BETA1)
        v.mul_(BETA2).addcmul_(grad, grad, value=1 - BETA2)
        denom = v.div(1 - BETA2 ** step).sqrt().add_(EPS)
        p.addcdiv_(grad * (neg_lr * (1.0 - mu) / (1.0 - mu_product)), denom)
        p.addcdiv_(m * (neg_lr * mu_next / (1.0 - mu_product * mu_next)), denom)


def add_scaled(t: torch.Tensor, other: torch.Tensor, value: Value) -> torch.Tensor:
    """t += value * other, value a scalar or an elementwise (or 0-d) tensor."""
    if isinstance(value, float):
        return t.add_(other, alpha=value)
    return t.addcmul_(other, value)
