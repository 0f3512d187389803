"""One training step of a Stack: forward, backward and the optimizer's update on one batch
per member, written by hand over the stack's [P, out, in] views.

The maths is what autograd and torch.optim do for the notebook's loss: cross-entropy plus
lambda*sum|p| (L1) or lambda*sum p^2 (L2) over one Linear layer, then the members' rule
(optim.py) at the schedule's lr. The gradients go straight into the stack's second buffer:
for SGD its momentum buffer, which the gradient GEMMs accumulate (C = beta*C + A@B), so
momentum costs no pass of its own.

When every member sees the same batch, the first layer (most of the FLOPs) is one wide
matmul [B, k] x [k, P*width] over the stored rows the batch needs (engine.py's docstring).
Nothing here reads a value back to the host, so a GPU can replay it as a CUDA graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from ..config import Schedule
from .optim import Rule, lr_factor
from .pixels import PixelOrder
from .regularizers import add_penalty, input_dropout, renorm

__all__ = ["GATHER_MIN_UNITS", "Stack", "batch_step", "first_layer"]

# From this first-layer width on (a member's, on a CPU), the prefix's zero pixels are
# gathered out too. It is the member's width, not the fused stack's: the gather sums in
# another order, so deciding by the stack's width made a trial's bits depend on how many
# trials it stacked with (numerics 4). Measured on 2 vCPUs, 1 thread: 11.4 s gathered
# against 11.5 s not for 10 stacked baselines (1280 units), 1.77-2.23 s against 1.51-1.53 s
# for one; 0.99x for 4 x 512 units.
GATHER_MIN_UNITS = 1024


class Stack(Protocol):
    """What a step reads and writes of engine.Stack (which imports this module)."""

    device: str
    members: list[int]
    shapes: list[tuple[int, int]]
    pixels: PixelOrder | None
    # the parameters and the second buffer (gradient or SGD's momentum), as layer views
    flat: torch.Tensor
    buf: torch.Tensor
    W: list[torch.Tensor]
    b: list[torch.Tensor]
    vW: list[torch.Tensor]
    vb: list[torch.Tensor]
    W0t: torch.Tensor
    vW0t: torch.Tensor
    minus_one: torch.Tensor
    # the regularizers
    input_dropout: bool
    p_input: list[float]
    drop_gens: list[torch.Generator]
    penalty_index: int
    l1: torch.Tensor | None
    l2: torch.Tensor | None
    max_norm: torch.Tensor | None
    # the optimizer, its schedule and the members' settings
    rule: Rule
    schedule: Schedule
    step_t: torch.Tensor
    steps: int
    total_steps: int
    lr: float | None
    beta: float | None
    momentum: torch.Tensor
    momentum_value: float | torch.Tensor
    wd: float | torch.Tensor
    any_decay: bool
    any_momentum: bool

    def neg_lr_tensor(self) -> torch.Tensor: ...

    def draw_masks(self, batch: int) -> list[torch.Tensor | None]: ...


def first_layer(s: Stack, x: torch.Tensor, w0t: torch.Tensor | None = None) -> torch.Tensor:
    """[P, B, width]: one matmul for all members when x [B, k] is shared.

    x holds the first k stored input columns; `w0t` defaults to the first k stored rows.
    """
    if x.dim() == 3:
        return torch.baddbmm(s.b[0], x, s.W[0].transpose(1, 2))
    n, out = len(s.members), s.shapes[0][0]
    w = s.W0t[:x.shape[1]] if w0t is None else w0t
    h = torch.addmm(s.b[0].reshape(n * out), x, w)
    return h.view(x.shape[0], n, out).transpose(0, 1)


def batch_step(s: Stack, x: torch.Tensor, y: torch.Tensor, rows: int | None = None,
               masks: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
    """Forward, backward and the update on one batch per member (Stack.step); loss [P]."""
    x0 = x if rows is None or x.dim() == 3 or s.input_dropout else x[:, :rows]
    if s.input_dropout:  # each member its own pixels: [P, B, 784]
        x0 = input_dropout(x0, s.p_input, [s.drop_gens[m] for m in s.members],
                           None if s.pixels is None else s.pixels.order)
    active = _active(s, x0)
    if active is not None:
        x0 = x0.index_select(1, active)
    masks = s.draw_masks(y.shape[1]) if masks is None else masks
    h, inputs, relus = _forward(s, x0, masks, active)
    target = y.unsqueeze(2)
    logp = torch.log_softmax(h, 2)
    loss = logp.gather(2, target).mean((1, 2)).neg_()
    g = logp.exp_()  # d(mean CE)/dz = (softmax - onehot) / batch
    g.scatter_add_(2, target, s.minus_one.expand_as(target))
    g.div_(y.shape[1])
    _backward(s, g, inputs, relus, masks, active)
    if s.l1 is not None or s.l2 is not None:
        k = s.penalty_index
        loss = loss + add_penalty(s.W[k], s.b[k], s.vW[k], s.vb[k], s.l1, s.l2)
    _update(s)
    if s.max_norm is not None:
        renorm(s.W[:-1], s.max_norm)  # the first layer's view is strided: fine
    return loss


def _forward(s: Stack, x0: torch.Tensor, masks: Sequence[torch.Tensor | None],
             active: torch.Tensor | None
             ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """The logits, each layer's input (after its dropout) and each hidden ReLU's output."""
    inputs, relus = [x0], []
    n_layers = len(s.W)
    for j in range(n_layers):
        h = first_layer(s, x0, None if active is None else s.W0t.index_select(0, active)) \
            if j == 0 else torch.baddbmm(s.b[j], inputs[j], s.W[j].transpose(1, 2))
        if j < n_layers - 1:
            h.relu_()
            relus.append(h)
            mask = masks[j]
            inputs.append(h if mask is None else h * mask)
    return h, inputs, relus


def _backward(s: Stack, g: torch.Tensor, inputs: list[torch.Tensor], relus: list[torch.Tensor],
              masks: Sequence[torch.Tensor | None], active: torch.Tensor | None) -> None:
    """From the logits' gradient g down, each layer's gradient into the second buffer."""
    beta = _decay(s)
    for j in range(len(s.W) - 1, -1, -1):
        _accumulate(s, j, g, inputs[j], beta, active)
        if j > 0:
            g = torch.ops.aten.threshold_backward(torch.bmm(g, s.W[j]), relus[j - 1], 0.0)
            mask = masks[j - 1]
            if mask is not None:
                g.mul_(mask)


def _update(s: Stack) -> None:
    """The rule's update at this step's lr (the schedule's factor times each lr), every
    changing number computed on the device from step_t."""
    neg_lr: float | torch.Tensor
    if s.schedule == "constant":
        neg_lr = -s.lr if s.lr is not None else s.neg_lr_tensor()
    else:
        factor = lr_factor(s.schedule, s.step_t, s.total_steps)
        neg_lr = factor * -s.lr if s.lr is not None else s.neg_lr_tensor() * factor
    s.step_t.add_(1)
    s.steps += 1
    s.rule.update(s.flat, s.buf, neg_lr, s.wd, s.momentum_value, s.step_t,
                  decay=s.any_decay, with_momentum=s.any_momentum)


def _decay(s: Stack) -> float:
    """The beta for the gradient GEMMs: buf = beta * buf + grad.

    With one momentum for all members that is the momentum itself; with several, each
    member's block is scaled by its own momentum first and the GEMMs add with beta 1.
    Other optimizers than SGD want the bare gradient: beta 0.
    """
    if s.rule.gradient_in_buffer:
        return 0.0
    if s.beta is not None:
        return s.beta
    n = len(s.members)
    s.vW0t.view(s.vW0t.shape[0], n, -1).mul_(s.momentum.view(1, n, 1))
    for v in s.vW[1:] + s.vb:
        v.mul_(s.momentum)
    return 1.0


def _active(s: Stack, x: torch.Tensor) -> torch.Tensor | None:
    """The stored rows (pixels) nonzero somewhere in this batch, for members wide enough
    that gathering them pays (GATHER_MIN_UNITS), on a CPU; else None."""
    if x.dim() != 2 or s.device != "cpu" or s.shapes[0][0] < GATHER_MIN_UNITS:
        return None
    return x.ne(0).any(0).nonzero().squeeze(1)


def _accumulate(s: Stack, j: int, g: torch.Tensor, a: torch.Tensor, beta: float,
                active: torch.Tensor | None = None) -> None:
    """buf[layer j] = beta * buf + gradient, for its weight and bias, in place."""
    vb = s.vb[j]
    if beta == 0.0:
        torch.sum(g, 1, keepdim=True, out=vb)
    else:
        if beta != 1.0:
            vb.mul_(beta)
        vb.add_(g.sum(1, keepdim=True))
    if j > 0 or a.dim() == 3:
        s.vW[j].baddbmm_(g.transpose(1, 2), a, beta=beta)
        return
    # The fused first layer: one [k, P*width] GEMM over the batch's k stored rows; the
    # rows past them get no gradient, only the momentum decay.
    g_flat = g.transpose(0, 1).reshape(a.shape[0], -1)  # [B, P*width]
    if active is not None:  # rows outside the batch's pixels get only the decay
        if beta != 1.0:
            s.vW0t.mul_(beta) if beta else s.vW0t.zero_()
        s.vW0t.index_add_(0, active, torch.mm(a.t(), g_flat))
        return
    k = a.shape[1]
    s.vW0t[:k].addmm_(a.t(), g_flat, beta=beta)
    if k < s.vW0t.shape[0] and beta != 1.0:
        rest = s.vW0t[k:]
        rest.mul_(beta) if beta else rest.zero_()
