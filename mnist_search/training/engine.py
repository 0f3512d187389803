"""The hand-written training step over a stack of P same-shape MLPs.

Weights are stacked as [P, out, in] (nn.Linear's layout) and biases as [P, 1, out], so every
layer is one bmm for all members. The maths is exactly what autograd and torch.optim do for
the notebook's loss, cross-entropy plus lambda*sum|p| (L1) or lambda*sum p^2 (L2) over the
weight and bias of one Linear layer, with the members' optimizer (SGD, whose momentum the
gradient GEMMs accumulate, Adam, AdamW, RMSprop or NAdam: optim.py) and lr schedule.

When all members share one batch order (a population trained together), the first layer,
which holds most of the FLOPs, is a single wide matmul [B, 784] x [784, P*width] instead of
P narrow ones: that is where stacking pays on a CPU. Its weights are stored transposed for
that, a row per input pixel; on a CPU the rows follow a PixelOrder (most often nonzero
first), so each batch uses only the prefix of rows up to its last nonzero pixel.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import torch

from ..config import IN_FEATURES, N_CLASSES, TrainConfig
from ..data import Split
from .graphs import GraphedGroups, graphable
from .mlp import build_mlp, linear_layers, sparsity
from .optim import RULES, lr_factor
from .pixels import PixelOrder

__all__ = ["DROPOUT_SEED_OFFSET", "EVAL_CHUNK", "GATHER_MIN_UNITS", "NUMERICS", "Stack",
           "matmul_precision"]

# The version of the arithmetic: bumped by any change that moves a trained weight of an
# existing config, recorded with every trial so `rerun` can say why bits differ.
# 1: up to 3a5fc6c; 2: the first layer's rows in CPU pixel order (3a5fc6c on);
# 3: Adam, AdamW, RMSprop and every lr schedule computed from device tensors (optim.py;
# SGD at a constant lr, the notebook's, keeps version 2's bits).
NUMERICS = 3

EVAL_CHUNK = 10_000
# From this fused first-layer width on (a CPU stack), the prefix's zero pixels are gathered
# out too: measured 1.1-1.2x per epoch for 11 stacked baselines (1408 units), a loss for
# one 512-unit layer (the gathers cost more than they save).
GATHER_MIN_UNITS = 1024
_LAYOUTS = itertools.count()
DROPOUT_SEED_OFFSET = 0x9E3779B9  # dropout masks get their own stream, apart from init/order


@contextlib.contextmanager
def matmul_precision(tf32: bool) -> Iterator[None]:
    """float32 matmuls on TF32 tensor cores inside the block when `tf32` (CUDA only: a CPU
    matmul is full fp32 either way); the process's setting as it was after it."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def _col(values: Sequence[float], device: str) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1, 1)


def _shapes(hidden: Sequence[int]) -> list[tuple[int, int]]:
    """(out, in) of each Linear layer of the MLP 784 -> hidden... -> 10."""
    widths = [IN_FEATURES, *hidden, N_CLASSES]
    return list(zip(widths[1:], widths[:-1], strict=True))


class Stack:
    """P models of one architecture, their momentum buffers and per-member settings."""

    def __init__(self, configs: Sequence[TrainConfig], device: str, total_steps: int = 0,
                 pixels: PixelOrder | None = None, *, use_graphs: bool = True) -> None:
        self.device = device
        self.use_graphs = use_graphs  # on a GPU, replay the step as a CUDA graph if it can
        self.pixels = pixels  # first-layer rows (and train columns) in this order, if set
        self.configs = list(configs)
        self.members = list(range(len(configs)))  # original indices of members still training
        c0 = configs[0]
        # Shared by all members (TrainConfig.stack_key): the optimizer and the lr schedule,
        # over total_steps batches; steps counts the updates made so far.
        self.kind, self.schedule = c0.optimizer, c0.schedule
        self.tf32 = c0.matmul_precision == "tf32"  # a stack key field: one for all members
        self.total_steps, self.steps = total_steps, 0
        if self.schedule != "constant" and total_steps < 1:
            raise ValueError(f"schedule {self.schedule!r} needs the run's total_steps")
        self.dropout_first_only = c0.dropout_after == "first"
        self.penalty_index = c0.penalty_layer - 1
        self.shapes = _shapes(c0.trained_hidden)  # (out, in) per layer, a bucket's if padded
        # Each member's own (out, in) per layer: a padded member's model is the top-left
        # block of each layer; the rest stays exactly zero (see _init_layers).
        self.own = [_shapes(c.hidden) for c in configs]
        self._minus_one = torch.full((1, 1, 1), -1.0, device=device)
        layers = [self._init_layers(c) for c in configs]
        weights = [torch.stack([m[j][0] for m in layers]) for j in range(len(self.shapes))]
        if pixels is not None:
            weights[0] = weights[0].index_select(2, pixels.order)
        biases = [torch.stack([m[j][1] for m in layers]).unsqueeze(1)
                  for j in range(len(self.shapes))]
        self.rule = RULES[self.kind](torch.zeros(sum(w.numel() for w in weights + biases),
                                                 device=device))
        # The updates made so far, on the device: what the bias corrections and the
        # schedule's factor are computed from inside the step (a CUDA graph replays it).
        # In float64, as Python's floats were: 1 - 0.999**t in float32 is off by 1e-5 at
        # t = 1, enough to move Adam's steps on rarely active pixels (MPS has no float64).
        self.step_t = torch.zeros((), device=device, dtype=torch.float32
                                  if device.startswith("mps") else torch.float64)
        self._load(weights, biases, [])
        self.drop_gens = [torch.Generator(device=device).manual_seed(c.seed + DROPOUT_SEED_OFFSET)
                          for c in configs]

    def _load(self, weights: list[torch.Tensor], biases: list[torch.Tensor],
              momentum: list[torch.Tensor]) -> None:
        """(Re)build the flat buffers for the live members.

        Each layer's weights for all members are one contiguous block of `flat` (then the
        biases), so an update is one op over everything, and the first layer of all members
        is one matrix for the fused matmul. For SGD `buf` is torch.optim.SGD's momentum
        buffer: the gradient GEMMs accumulate straight into it (C = beta*C + A@B), so the
        momentum update costs no pass of its own; for the other optimizers it holds the
        gradient, and their state lives in self.rule, laid out like `flat`.
        """
        n = len(self.members)
        self._graph: GraphedGroups | None = None  # captured for this layout; rebuilt with it
        self.layout = next(_LAYOUTS)  # changes whenever the buffers are rebuilt
        self.flat = self._flatten(weights, biases)
        self.buf = self._flatten(momentum[:len(weights)], momentum[len(weights):]) \
            if momentum else torch.zeros_like(self.flat)
        live = [self.configs[m] for m in self.members]
        (out0, in0), size0 = self.shapes[0], n * self.shapes[0][0] * self.shapes[0][1]
        self.W0t = self.flat[:size0].view(in0, n * out0)  # all first layers, transposed
        self.vW0t = self.buf[:size0].view(in0, n * out0)
        views, grads = self._split(self.flat, n), self._split(self.buf, n)
        self.W, self.b = views[:len(self.shapes)], views[len(self.shapes):]
        self.vW, self.vb = grads[:len(self.shapes)], grads[len(self.shapes):]
        # One lr / momentum / decay for all members (the usual case) is a scalar in the fused
        # ops; otherwise per-member columns broadcast over each member's block.
        lrs, moms = {c.lr for c in live}, {c.momentum for c in live}
        self.lr = lrs.pop() if len(lrs) == 1 else None
        self.beta = moms.pop() if len(moms) == 1 else None
        self.neg_lr = None if self.lr is not None else self._per_member([-c.lr for c in live])
        self.wd = self._value([c.weight_decay for c in live])
        self.momentum_value = self._value([c.momentum for c in live])
        # decided once per layout, never from a tensor inside a step (a host sync)
        self.any_decay = any(c.weight_decay for c in live)
        self.any_momentum = any(c.momentum for c in live)
        self.momentum = _col([c.momentum for c in live], self.device)
        self.l1 = _col([c.l1 for c in live], self.device)
        self.l2 = _col([c.l2 for c in live], self.device)
        self.p_drop = [c.dropout for c in live]
        self.p_input = [c.input_dropout for c in live]
        self.input_dropout = any(p > 0 for p in self.p_input)
        # each member's max-norm per hidden unit (inf: none), when any member has one
        self.max_norm = None if not any(c.max_norm for c in live) else \
            _col([c.max_norm or math.inf for c in live], self.device)
        self._penalised = any(c.l1 > 0 or c.l2 > 0 for c in live)
        self._any_l1 = any(c.l1 > 0 for c in live)
        self._any_l2 = any(c.l2 > 0 for c in live)

    def _flatten(self, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> torch.Tensor:
        """Per-layer [P, out, in] weights and [P, 1, out] biases as one flat buffer.

        The first layer is stored transposed, [784, P*out]: a row per input pixel, so the
        rows of pixels that are zero in a whole batch can be left out (see step).
        """
        first = weights[0].permute(2, 0, 1).reshape(-1)
        return torch.cat([first, *[t.reshape(-1) for t in weights[1:] + biases]]).to(self.device)

    def _split(self, buffer: torch.Tensor, n: int) -> list[torch.Tensor]:
        """Views of a flat buffer laid out like `flat`: per layer [P, out, in] weights (the
        first layer's a transposed view), then per layer [P, 1, out] biases."""
        (out0, in0), offset = self.shapes[0], n * self.shapes[0][0] * self.shapes[0][1]
        views = [buffer[:offset].view(in0, n, out0).permute(1, 2, 0)]
        for out, inp in self.shapes[1:]:
            views.append(buffer[offset:offset + n * out * inp].view(n, out, inp))
            offset += n * out * inp
        for out, _ in self.shapes:
            views.append(buffer[offset:offset + n * out].view(n, 1, out))
            offset += n * out
        return views

    def _value(self, values: list[float]) -> float | torch.Tensor:
        """One value for all members as a float, else each member's at each parameter."""
        return values[0] if len(set(values)) == 1 else self._per_member(values)

    def _per_member(self, values: list[float]) -> torch.Tensor:
        """A flat buffer holding each member's value at each of its parameters."""
        v = torch.tensor(values, dtype=torch.float32, device=self.device).view(-1, 1, 1)
        n = len(values)
        return self._flatten([v.expand(n, out, inp) for out, inp in self.shapes],
                             [v.expand(n, 1, out) for out, _ in self.shapes])

    def _init_layers(self, config: TrainConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """nn.Linear's own init of the member's model under its seed (without touching the
        global RNG), zero-padded to the stack's shapes.

        Padded units then stay exactly zero under every update: with zero weights in and
        out, a padded unit's output, its gradient and every gradient through it are 0, and
        so are its penalty, decay and optimizer state. A padded member computes its own
        model's function; only the shapes of the sums around it change.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = build_mlp(config.hidden)
        layers = []
        for (out, inp), lin in zip(self.shapes, linear_layers(model), strict=True):
            # on the CPU, as nn.Linear's init drew them; _flatten moves them to the device
            w, b = torch.zeros(out, inp, device="cpu"), torch.zeros(out, device="cpu")
            w[:lin.out_features, :lin.in_features] = lin.weight.detach()
            b[:lin.out_features] = lin.bias.detach()
            layers.append((w, b))
        return layers

    def run_epoch(self, split: Split, perms: list[torch.Tensor], batch_size: int,
                  between_batches: Callable[[], None] | None = None,
                  ) -> tuple[list[float], list[float]]:
        """One pass over `split`; (loss sums, last-batch losses) per live member.

        `perms` holds one order per original member; if the live members share one order
        object, batches are gathered once and the fused first layer is used.
        """
        with matmul_precision(self.tf32):
            return self._run_epoch(split, perms, batch_size, between_batches)

    def _run_epoch(self, split: Split, perms: list[torch.Tensor], batch_size: int,
                   between_batches: Callable[[], None] | None,
                   ) -> tuple[list[float], list[float]]:
        live = [perms[m] for m in self.members]
        shared = all(p is live[0] for p in live)
        order = (live[0] if shared else torch.stack(live)).to(self.device)
        n = order.shape[-1]
        images, prefixes = split.x, None
        if self.pixels is not None:
            if PixelOrder.of(split) is not self.pixels:
                raise ValueError("this stack's first layer follows another split's pixel order")
            images = self.pixels.x
            prefixes = self.pixels.prefixes(order, batch_size) if shared else None
        graph = self._graphed(images, split.y, batch_size) if shared else None
        loss_sum = torch.zeros(len(self.members), device=self.device)
        loss, start = loss_sum, 0
        if graph is not None:  # full batches replayed; the short last one, if any, eager
            start = graph.run(order, between_batches)
            loss_sum, loss = graph.loss_sums[0].clone(), graph.lasts[0].clone()
        for i in range(start, n, batch_size):
            idx = order[..., i:i + batch_size]
            flat = idx.reshape(-1)
            x = images.index_select(0, flat).view(*idx.shape, -1)
            y = split.y.index_select(0, flat).view(idx.shape)
            if shared:
                y = y.expand(len(self.members), -1)
            loss = self.step(x, y, None if prefixes is None else prefixes[i // batch_size])
            loss_sum += loss  # stays on device: no host sync inside the batch loop
            if between_batches is not None:
                between_batches()
        return loss_sum.tolist(), loss.tolist()

    def masked_layers(self) -> list[bool]:
        """Per hidden layer: whether any live member drops units after it."""
        live = any(p > 0 for p in self.p_drop)
        return [live and not (self.dropout_first_only and layer > 0)
                for layer in range(len(self.shapes) - 1)]

    def draw_masks(self, batch: int) -> list[torch.Tensor | None]:
        """Scaled keep-masks [P, batch, width] per hidden layer (None: no dropout there),
        drawn from each member's own stream, layer by layer, before the step uses them."""
        live = [(pos, p) for pos, p in enumerate(self.p_drop) if p > 0]
        masks: list[torch.Tensor | None] = []
        for masked, (width, _) in zip(self.masked_layers(), self.shapes[:-1], strict=False):
            if not masked:
                masks.append(None)
                continue
            mask = torch.ones((len(self.members), batch, width), device=self.device)
            layer = len(masks)
            for pos, p in live:
                member = self.members[pos]
                own = self.own[member][layer][0]  # a padded member draws its own width only
                keep = torch.rand((batch, own), generator=self.drop_gens[member],
                                  device=self.device) >= p
                mask[pos, :, :own] = keep.to(mask.dtype) / (1.0 - p)
            masks.append(mask)
        return masks

    def _graphed(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int
                 ) -> GraphedGroups | None:
        """The captured step for these images and batch size, when steps can be graphed."""
        if not graphable(self):
            return None
        g = self._graph
        if g is None or g.images is not images or len(g.idx) != batch_size:
            g = self._graph = GraphedGroups([self], images, labels, batch_size)
        return g

    def _first_layer(self, x: torch.Tensor, w0t: torch.Tensor | None = None) -> torch.Tensor:
        """[P, B, width]: one matmul for all members when x [B, k] is shared.

        x holds the first k stored input columns; `w0t` defaults to the first k stored rows.
        """
        if x.dim() == 3:
            return torch.baddbmm(self.b[0], x, self.W[0].transpose(1, 2))
        n, out = len(self.members), self.shapes[0][0]
        w = self.W0t[:x.shape[1]] if w0t is None else w0t
        h = torch.addmm(self.b[0].reshape(n * out), x, w)
        return h.view(x.shape[0], n, out).transpose(0, 1)

    def step(self, x: torch.Tensor, y: torch.Tensor, rows: int | None = None,
             masks: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """Forward, backward and the optimizer's update on one batch per member; returns
        loss [P].

        x is [B, 784] when every member sees the same batch, else [P, B, 784], its columns
        in the stored pixel order. With `rows`, the batch's pixels from stored position
        `rows` on are all zero: their first-layer products are exact zeros, left out.
        `masks` are the dropout masks (draw_masks), drawn here unless given.
        """
        n_layers = len(self.W)
        x0 = x if rows is None or x.dim() == 3 or self.input_dropout else x[:, :rows]
        if self.input_dropout:  # each member its own pixels: [P, B, 784]
            x0 = self._drop_inputs(x0)
        active = self._active(x0)
        if active is not None:
            x0 = x0.index_select(1, active)
        masks = self.draw_masks(y.shape[1]) if masks is None else masks
        inputs, relus = [x0], []
        for j in range(n_layers):
            h = self._first_layer(x0, None if active is None else
                                  self.W0t.index_select(0, active)) if j == 0 else \
                torch.baddbmm(self.b[j], inputs[j], self.W[j].transpose(1, 2))
            if j < n_layers - 1:
                h.relu_()
                relus.append(h)
                mask = masks[j]
                inputs.append(h if mask is None else h * mask)
        target = y.unsqueeze(2)
        logp = torch.log_softmax(h, 2)
        loss = logp.gather(2, target).mean((1, 2)).neg_()
        g = logp.exp_()  # d(mean CE)/dz = (softmax - onehot) / batch
        g.scatter_add_(2, target, self._minus_one.expand_as(target))
        g.div_(y.shape[1])
        beta = self._decay()
        for j in range(n_layers - 1, -1, -1):
            self._accumulate(j, g, inputs[j], beta, active)
            if j > 0:
                g = torch.ops.aten.threshold_backward(torch.bmm(g, self.W[j]), relus[j - 1], 0.0)
                mask = masks[j - 1]
                if mask is not None:
                    g.mul_(mask)
        if self._penalised:
            loss = loss + self._penalty()
        self._update()
        if self.max_norm is not None:
            self._renorm()
        return loss

    def _drop_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, k] or [P, B, k] with each member's input-dropout mask applied: [P, B, k].

        A member's mask is drawn over all 784 pixels in their natural order (as a plain
        loop draws it), then put in the stored column order and cut to the batch's k."""
        batch, k = x.shape[-2], x.shape[-1]
        mask = torch.ones((len(self.members), batch, k), device=self.device)
        for pos, p in enumerate(self.p_input):
            if p > 0:
                gen = self.drop_gens[self.members[pos]]
                keep = torch.rand((batch, IN_FEATURES), generator=gen, device=self.device) >= p
                if self.pixels is not None:
                    keep = keep.index_select(1, self.pixels.order)
                mask[pos] = keep[:, :k].to(mask.dtype) / (1.0 - p)
        return x * mask

    def _renorm(self) -> None:
        """Max-norm: rescale each hidden unit's incoming weights to norm <= its member's
        limit, with torch.renorm's factor limit / (norm + 1e-7)."""
        assert self.max_norm is not None
        for w in self.W[:-1]:  # [P, out, in] views (the first layer's is strided)
            norm = torch.linalg.vector_norm(w, dim=2, keepdim=True)
            w.mul_(torch.where(norm > self.max_norm, self.max_norm / (norm + 1e-7), 1.0))

    def _update(self) -> None:
        """The rule's update at this step's lr (the schedule's factor times each lr), every
        changing number computed on the device from step_t."""
        neg_lr: float | torch.Tensor
        if self.schedule == "constant":
            neg_lr = -self.lr if self.lr is not None else self.neg_lr_tensor()
        else:
            factor = lr_factor(self.schedule, self.step_t, self.total_steps)
            neg_lr = factor * -self.lr if self.lr is not None else self.neg_lr_tensor() * factor
        self.step_t.add_(1)
        self.steps += 1
        self.rule.update(self.flat, self.buf, neg_lr, self.wd, self.momentum_value, self.step_t,
                         decay=self.any_decay, with_momentum=self.any_momentum)

    def mutable(self) -> list[torch.Tensor]:
        """Every tensor a step changes, for a CUDA graph's warm-up to put back."""
        return [self.flat, self.buf, self.step_t, *self.rule.tensors()]

    def neg_lr_tensor(self) -> torch.Tensor:
        assert self.neg_lr is not None  # set whenever members' lrs differ
        return self.neg_lr

    def _decay(self) -> float:
        """The beta for the gradient GEMMs: buf = beta * buf + grad.

        With one momentum for all members that is the momentum itself; with several, each
        member's block is scaled by its own momentum first and the GEMMs add with beta 1.
        Other optimizers than SGD want the bare gradient: beta 0.
        """
        if self.rule.gradient_in_buffer:
            return 0.0
        if self.beta is not None:
            return self.beta
        n = len(self.members)
        self.vW0t.view(self.vW0t.shape[0], n, -1).mul_(self.momentum.view(1, n, 1))
        for v in self.vW[1:] + self.vb:
            v.mul_(self.momentum)
        return 1.0

    def _active(self, x: torch.Tensor) -> torch.Tensor | None:
        """The stored rows (pixels) nonzero somewhere in this batch, for a stack wide
        enough that gathering them pays (GATHER_MIN_UNITS), on a CPU; else None."""
        if x.dim() != 2 or self.device != "cpu" or self.W0t.shape[1] < GATHER_MIN_UNITS:
            return None
        return x.ne(0).any(0).nonzero().squeeze(1)

    def _accumulate(self, j: int, g: torch.Tensor, a: torch.Tensor, beta: float,
                    active: torch.Tensor | None = None) -> None:
        """buf[layer j] = beta * buf + gradient, for its weight and bias, in place."""
        vb = self.vb[j]
        if beta == 0.0:
            torch.sum(g, 1, keepdim=True, out=vb)
        else:
            if beta != 1.0:
                vb.mul_(beta)
            vb.add_(g.sum(1, keepdim=True))
        if j > 0 or a.dim() == 3:
            self.vW[j].baddbmm_(g.transpose(1, 2), a, beta=beta)
            return
        # The fused first layer: one [k, P*width] GEMM over the batch's k stored rows; the
        # rows past them get no gradient, only the momentum decay.
        g_flat = g.transpose(0, 1).reshape(a.shape[0], -1)  # [B, P*width]
        if active is not None:  # rows outside the batch's pixels get only the decay
            if beta != 1.0:
                self.vW0t.mul_(beta) if beta else self.vW0t.zero_()
            self.vW0t.index_add_(0, active, torch.mm(a.t(), g_flat))
            return
        k = a.shape[1]
        self.vW0t[:k].addmm_(a.t(), g_flat, beta=beta)
        if k < self.vW0t.shape[0] and beta != 1.0:
            rest = self.vW0t[k:]
            rest.mul_(beta) if beta else rest.zero_()

    def _penalty(self) -> torch.Tensor:
        """Add the penalty's gradient to the buffer; return its value per member."""
        k = self.penalty_index
        value = torch.zeros((), device=self.device)
        w, b = self.W[k], self.b[k]
        if self._any_l1:
            self.vW[k].add_(torch.sign(w) * self.l1)
            self.vb[k].add_(torch.sign(b) * self.l1)
            value = value + self.l1.view(-1) * (w.abs().sum((1, 2)) + b.abs().sum((1, 2)))
        if self._any_l2:
            self.vW[k].add_(w * (2 * self.l2))
            self.vb[k].add_(b * (2 * self.l2))
            value = value + self.l2.view(-1) * (w.square().sum((1, 2)) + b.square().sum((1, 2)))
        return value

    @torch.inference_mode()
    def accuracy(self, split: Split) -> list[float]:
        """Percent correct per member, in chunks; the first layer is one mm for all members."""
        with matmul_precision(self.tf32):
            return self._accuracy(split)

    def _accuracy(self, split: Split) -> list[float]:
        correct = torch.zeros(len(self.members), device=self.device)
        w0t = self.W0t if self.pixels is None else self.W0t.index_select(0, self.pixels.inverse)
        for i in range(0, len(split), EVAL_CHUNK):
            x, y = split.x[i:i + EVAL_CHUNK], split.y[i:i + EVAL_CHUNK]
            h = self._first_layer(x, w0t)
            for j in range(1, len(self.W)):
                h = torch.baddbmm(self.b[j], h.relu_(), self.W[j].transpose(1, 2))
            correct += (h.argmax(2) == y).sum(1)
        return (100.0 * correct / len(split)).tolist()

    def linears(self, pos: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Member `pos`'s (weight [out, in], bias [out]) per Linear layer, as copies of its
        own model (a padded member's padding left out)."""
        return [(self._weight(j, pos), self._bias(j, pos)) for j in range(len(self.shapes))]

    def _weight(self, j: int, pos: int) -> torch.Tensor:
        """Member `pos`'s layer-j weight [out, in] in nn.Linear's own column order, a copy."""
        out, inp = self.own[self.members[pos]][j]
        w = self.W[j][pos]
        if j == 0 and self.pixels is not None:
            w = w.index_select(1, self.pixels.inverse)
        return w[:out, :inp].clone()

    def _bias(self, j: int, pos: int) -> torch.Tensor:
        return self.b[j][pos, 0, :self.own[self.members[pos]][j][0]].clone()

    @classmethod
    def alone(cls, config: TrainConfig, linears: Sequence[tuple[torch.Tensor, torch.Tensor]],
              device: str) -> Stack:
        """A stack of one member holding these weights: how a trained model is scored by
        itself, so a model saved to a file scores the same as when it was trained."""
        # Scored, never trained; at the model's own widths, as its file is scored.
        stack = cls([dataclasses.replace(config, pad_hidden=None)], device, total_steps=1)
        with torch.no_grad():
            for j, (w, b) in enumerate(linears):
                stack.W[j][0].copy_(w)
                stack.b[j][0, 0].copy_(b)
        return stack

    def drop(self, members: list[int]) -> None:
        """Remove members (original indices) from the stack."""
        if not members:
            return
        keep = [pos for pos, m in enumerate(self.members) if m not in members]
        if not keep:
            self.members = []
            return
        idx = torch.tensor(keep, device=self.device, dtype=torch.long)
        weights = [w.index_select(0, idx) for w in self.W]
        biases = [b.index_select(0, idx) for b in self.b]
        bufs = [v.index_select(0, idx) for v in self.vW + self.vb]
        n, layers = len(self.members), len(self.shapes)
        for name, state in self.rule.state.items():  # it follows the members who stay
            kept = [v.index_select(0, idx) for v in self._split(state, n)]
            self.rule.state[name] = self._flatten(kept[:layers], kept[layers:])
        self.members = [self.members[pos] for pos in keep]
        self._load(weights, biases, bufs)

    def state_dict(self, pos: int, config: TrainConfig) -> dict[str, torch.Tensor]:
        """Member `pos` as the state_dict of build_mlp(config...)."""
        model = build_mlp(config.hidden, config.dropout, config.dropout_after)
        with torch.no_grad():
            for j, lin in enumerate(linear_layers(model)):
                lin.weight.copy_(self._weight(j, pos))
                lin.bias.copy_(self._bias(j, pos))
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}

    def sparsity(self, pos: int, tol: float = 1e-3) -> tuple[float, float]:
        """(fraction exactly zero, fraction |w| < tol) of the penalised layer's parameters."""
        k = self.penalty_index
        return sparsity([self._weight(k, pos), self._bias(k, pos)], tol)
