"""A stack of P same-shape MLPs trained together: their buffers, epochs and members.

Weights are stacked as [P, out, in] (nn.Linear's layout) and biases as [P, 1, out], so every
layer is one bmm for all members; the step over them (step.py) is exactly what autograd and
torch.optim do for the notebook's loss with the members' optimizer (optim.py) and schedule.

When all members share one batch order (a population trained together), the first layer,
which holds most of the FLOPs, is a single wide matmul [B, 784] x [784, P*width] instead of
P narrow ones: that is where stacking pays on a CPU. Its weights are stored transposed for
that, a row per input pixel; on a CPU the rows follow a PixelOrder (most often nonzero
first), so each batch uses only the prefix of rows up to its last nonzero pixel.

Here: building a stack, its epochs, scoring, and members leaving it. In modules of their
own: one step (step.py), the flat layout of the buffers (layout.py), the regularizers
(regularizers.py), a member's init and its extraction (members.py), the optimizer rules
(optim.py) and the step as a CUDA graph (graphs.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import torch

from ..config import TrainConfig
from ..data import Split
from .graphs import GraphedGroups, GraphFailed, graphable, train_eagerly
from .layout import Layout, column, layer_shapes
from .members import Linears, initial_linears, member_linears, member_sparsity, member_state_dict
from .optim import RULES
from .pixels import PixelOrder
from .regularizers import dropout_masks
from .step import batch_step, first_layer

__all__ = ["DROPOUT_SEED_OFFSET", "EVAL_CHUNK", "NUMERICS", "Stack", "matmul_precision"]

# The version of the arithmetic: bumped by any change that moves a trained weight of an
# existing config, recorded with every trial so `rerun` can say why bits differ.
# 1: up to 3a5fc6c; 2: the first layer's rows in CPU pixel order (3a5fc6c on);
# 3: Adam, AdamW, RMSprop and every lr schedule computed from device tensors (optim.py;
# SGD at a constant lr, the notebook's, keeps version 2's bits); 4: whether a CPU stack
# gathers its first layer's rows is decided by its members' width, not the stack's, so a
# member's bits no longer depend on its stack-mates (with one thread per worker).
NUMERICS = 4

EVAL_CHUNK = 10_000
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


class Stack:
    """P models of one architecture, their momentum buffers and per-member settings."""

    def __init__(self, configs: Sequence[TrainConfig], device: str, total_steps: int = 0,
                 pixels: PixelOrder | None = None, *, use_graphs: bool = True,
                 initial: Sequence[Linears] | None = None) -> None:
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
        self.shapes = layer_shapes(c0.trained_hidden)  # (out, in) per layer, a bucket's if padded
        self.layout = Layout(tuple(self.shapes), device)
        # Each member's own (out, in) per layer: a padded member's model is the top-left
        # block of each layer; the rest stays exactly zero (see members.initial_linears).
        self.own = [layer_shapes(c.hidden) for c in configs]
        self.minus_one = torch.full((1, 1, 1), -1.0, device=device)
        # Each member's init, unless given (a trained model scored alone: see alone)
        layers = initial or [initial_linears(c, self.shapes) for c in configs]
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
        """(Re)build the flat buffers for the live members (layout.py).

        For SGD `buf` is torch.optim.SGD's momentum buffer: the gradient GEMMs accumulate
        straight into it (C = beta*C + A@B), so the momentum update costs no pass of its
        own; for the other optimizers it holds the gradient, and their state lives in
        self.rule, laid out like `flat`.
        """
        n = len(self.members)
        self._graph: GraphedGroups | None = None  # captured for this layout; rebuilt with it
        self.generation = next(_LAYOUTS)  # changes whenever the buffers are rebuilt
        self.flat = self.layout.flatten(weights, biases)
        self.buf = self.layout.flatten(momentum[:len(weights)], momentum[len(weights):]) \
            if momentum else torch.zeros_like(self.flat)
        live = [self.configs[m] for m in self.members]
        self.W0t = self.layout.first_rows(self.flat, n)  # all first layers, transposed
        self.vW0t = self.layout.first_rows(self.buf, n)
        views, grads = self.layout.views(self.flat, n), self.layout.views(self.buf, n)
        self.W, self.b = views[:len(self.shapes)], views[len(self.shapes):]
        self.vW, self.vb = grads[:len(self.shapes)], grads[len(self.shapes):]
        # One lr / momentum / decay for all members (the usual case) is a scalar in the fused
        # ops; otherwise per-member columns broadcast over each member's block.
        lrs, moms = {c.lr for c in live}, {c.momentum for c in live}
        self.lr = lrs.pop() if len(lrs) == 1 else None
        self.beta = moms.pop() if len(moms) == 1 else None
        self.neg_lr = None if self.lr is not None else \
            self.layout.per_member([-c.lr for c in live])
        self.wd = self.layout.value([c.weight_decay for c in live])
        self.momentum_value = self.layout.value([c.momentum for c in live])
        # decided once per layout, never from a tensor inside a step (a host sync)
        self.any_decay = any(c.weight_decay for c in live)
        self.any_momentum = any(c.momentum for c in live)
        self.momentum = column([c.momentum for c in live], self.device)
        self.l1 = column([c.l1 for c in live], self.device) if any(c.l1 for c in live) else None
        self.l2 = column([c.l2 for c in live], self.device) if any(c.l2 for c in live) else None
        self.p_drop = [c.dropout for c in live]
        self.p_input = [c.input_dropout for c in live]
        self.input_dropout = any(p > 0 for p in self.p_input)
        # each member's max-norm per hidden unit (inf: none), when any member has one
        self.max_norm = None if not any(c.max_norm for c in live) else \
            column([c.max_norm or math.inf for c in live], self.device)

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
            try:
                start = graph.run(order, between_batches)
            except GraphFailed as failed:  # the rest of the epoch, and the run, eagerly
                train_eagerly([self], failed)
                self._graph, start = None, failed.done
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
        layers = [(masked, width) for masked, (width, _)
                  in zip(self.masked_layers(), self.shapes[:-1], strict=False)]
        own = [[out for out, _ in self.own[m][:-1]] for m in self.members]
        return dropout_masks(batch, layers, self.p_drop, own,
                             [self.drop_gens[m] for m in self.members], self.device)

    def _graphed(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int
                 ) -> GraphedGroups | None:
        """The captured step for these images and batch size, when steps can be graphed."""
        if not graphable(self):
            return None
        g = self._graph
        if g is None or g.images is not images or len(g.idx) != batch_size:
            try:
                g = self._graph = GraphedGroups([self], images, labels, batch_size)
            except GraphFailed as failed:
                train_eagerly([self], failed)
                return None
        return g

    def step(self, x: torch.Tensor, y: torch.Tensor, rows: int | None = None,
             masks: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """Forward, backward and the optimizer's update on one batch per member (step.py);
        returns loss [P].

        x is [B, 784] when every member sees the same batch, else [P, B, 784], its columns
        in the stored pixel order. With `rows`, the batch's pixels from stored position
        `rows` on are all zero: their first-layer products are exact zeros, left out.
        `masks` are the dropout masks (draw_masks), drawn here unless given.
        """
        return batch_step(self, x, y, rows, masks)

    def mutable(self) -> list[torch.Tensor]:
        """Every tensor a step changes, for a CUDA graph's warm-up to put back."""
        return [self.flat, self.buf, self.step_t, *self.rule.tensors()]

    def neg_lr_tensor(self) -> torch.Tensor:
        assert self.neg_lr is not None  # set whenever members' lrs differ
        return self.neg_lr

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
            h = first_layer(self, x, w0t)
            for j in range(1, len(self.W)):
                h = torch.baddbmm(self.b[j], h.relu_(), self.W[j].transpose(1, 2))
            correct += (h.argmax(2) == y).sum(1)
        # the percentage in Python's doubles: 9730 of 10,000 is 97.3, where float32 gave
        # 97.30000305175781, the value Optuna stored and the dashboard showed as the best
        return [100.0 * c / len(split) for c in correct.tolist()]

    def linears(self, pos: int) -> Linears:
        """Member `pos`'s (weight [out, in], bias [out]) per Linear layer, as copies of its
        own model (a padded member's padding left out)."""
        return member_linears(self.W, self.b, pos, self.own[self.members[pos]],
                              None if self.pixels is None else self.pixels.inverse)

    @classmethod
    def alone(cls, config: TrainConfig, linears: Linears,
              device: str) -> Stack:
        """A stack of one member holding these weights: how a trained model is scored by
        itself, so a model saved to a file scores the same as when it was trained."""
        # Scored, never trained; at the model's own widths, as its file is scored.
        return cls([dataclasses.replace(config, pad_hidden=None)], device, total_steps=1,
                   initial=[[(w.detach().float(), b.detach().float()) for w, b in linears]])

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
        n = len(self.members)
        for name, state in self.rule.state.items():  # it follows the members who stay
            self.rule.state[name] = self.layout.select(state, n, idx)
        self.members = [self.members[pos] for pos in keep]
        self._load(weights, biases, bufs)

    def state_dict(self, pos: int, config: TrainConfig) -> dict[str, torch.Tensor]:
        """Member `pos` as the state_dict of build_mlp(config...)."""
        return member_state_dict(self.linears(pos), config)

    def sparsity(self, pos: int, tol: float = 1e-3) -> tuple[float, float]:
        """(fraction exactly zero, fraction |w| < tol) of the penalised layer's parameters."""
        return member_sparsity(self.linears(pos), self.penalty_index, tol)
