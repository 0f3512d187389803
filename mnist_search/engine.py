"""The hand-written training step over a stack of P same-shape MLPs.

Weights are stacked as [P, out, in] (nn.Linear's layout) and biases as [P, 1, out], so every
layer is one bmm for all members. The maths is exactly what autograd and
torch.optim.SGD(momentum, dampening=0) do for the notebook's loss, cross-entropy plus
lambda*sum|p| (L1) or lambda*sum p^2 (L2) over the weight and bias of one Linear layer.

When all members share one batch order (a population trained together), the first layer,
which holds most of the FLOPs, is a single wide matmul [B, 784] x [784, P*width] instead of
P narrow ones: that is where stacking pays on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .config import TrainConfig
from .data import Split
from .model import IN_FEATURES, N_CLASSES, build_mlp, linear_layers, sparsity

EVAL_CHUNK = 10_000
_DROPOUT_SEED_OFFSET = 0x9E3779B9  # dropout masks get their own stream, apart from init/order


def _col(values: Sequence[float], device: str) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1, 1)


class Stack:
    """P models of one architecture, their momentum buffers and per-member settings."""

    def __init__(self, configs: Sequence[TrainConfig], device: str) -> None:
        self.device = device
        self.configs = list(configs)
        self.members = list(range(len(configs)))  # original indices of members still training
        c0 = configs[0]
        self.dropout_first_only = c0.dropout_after == "first"
        self.penalty_index = c0.penalty_layer - 1
        widths = [IN_FEATURES, *c0.hidden, N_CLASSES]
        self.shapes = list(zip(widths[1:], widths[:-1], strict=True))  # (out, in) per layer
        self._minus_one = torch.full((1, 1, 1), -1.0, device=device)
        layers = [self._init_layers(c) for c in configs]
        weights = [torch.stack([m[j][0] for m in layers]) for j in range(len(self.shapes))]
        biases = [torch.stack([m[j][1] for m in layers]).unsqueeze(1)
                  for j in range(len(self.shapes))]
        self._load(weights, biases, [])
        self.drop_gens = [torch.Generator(device=device).manual_seed(c.seed + _DROPOUT_SEED_OFFSET)
                          for c in configs]

    def _load(self, weights: list[torch.Tensor], biases: list[torch.Tensor],
              momentum: list[torch.Tensor]) -> None:
        """(Re)build the flat buffers for the live members.

        Each layer's weights for all members are one contiguous block of `flat` (then the
        biases), so the SGD update is one op over everything, and the first layer of all
        members is one matrix for the fused matmul. `buf` is torch.optim.SGD's momentum
        buffer: the gradient GEMMs accumulate straight into it (C = beta*C + A@B), so the
        momentum update costs no pass of its own.
        """
        blocks = [t.reshape(-1) for t in weights + biases]
        self.flat = torch.cat(blocks).to(self.device)
        self.buf = torch.cat([t.reshape(-1) for t in momentum]).to(self.device) \
            if momentum else torch.zeros_like(self.flat)
        live = [self.configs[m] for m in self.members]
        n = len(live)
        self.W, self.b, self.vW, self.vb = [], [], [], []
        offset = 0
        for out, inp in self.shapes:
            size = n * out * inp
            self.W.append(self.flat[offset:offset + size].view(n, out, inp))
            self.vW.append(self.buf[offset:offset + size].view(n, out, inp))
            offset += size
        for out, _ in self.shapes:
            self.b.append(self.flat[offset:offset + n * out].view(n, 1, out))
            self.vb.append(self.buf[offset:offset + n * out].view(n, 1, out))
            offset += n * out
        # One lr / one momentum for all members (the usual case) is a scalar in the fused
        # ops; otherwise per-member columns broadcast over each member's block.
        lrs, moms = {c.lr for c in live}, {c.momentum for c in live}
        self.lr = lrs.pop() if len(lrs) == 1 else None
        self.beta = moms.pop() if len(moms) == 1 else None
        per_member = [b.numel() // n for b in blocks]
        self.neg_lr = None if self.lr is not None else \
            self._expand([-c.lr for c in live], per_member)
        self.momentum = _col([c.momentum for c in live], self.device)
        self.l1 = _col([c.l1 for c in live], self.device)
        self.l2 = _col([c.l2 for c in live], self.device)
        self.p_drop = [c.dropout for c in live]
        self._penalised = any(c.l1 > 0 or c.l2 > 0 for c in live)
        self._any_l1 = any(c.l1 > 0 for c in live)
        self._any_l2 = any(c.l2 > 0 for c in live)

    def _expand(self, values: list[float], per_member: list[int]) -> torch.Tensor:
        v = torch.tensor(values, dtype=torch.float32, device=self.device)
        return torch.cat([v.repeat_interleave(size) for size in per_member])

    @staticmethod
    def _init_layers(config: TrainConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # nn.Linear's own init under the member's seed, without touching the global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = build_mlp(config.hidden)
        return [(lin.weight.detach().clone(), lin.bias.detach().clone())
                for lin in linear_layers(model)]

    def run_epoch(self, split: Split, perms: list[torch.Tensor], batch_size: int,
                  ) -> tuple[list[float], list[float]]:
        """One pass over `split`; (loss sums, last-batch losses) per live member.

        `perms` holds one order per original member; if the live members share one order
        object, batches are gathered once and the fused first layer is used.
        """
        live = [perms[m] for m in self.members]
        shared = all(p is live[0] for p in live)
        order = (live[0] if shared else torch.stack(live)).to(self.device)
        n = order.shape[-1]
        loss_sum = torch.zeros(len(self.members), device=self.device)
        loss = loss_sum
        for i in range(0, n, batch_size):
            idx = order[..., i:i + batch_size]
            flat = idx.reshape(-1)
            x = split.x.index_select(0, flat).view(*idx.shape, -1)
            y = split.y.index_select(0, flat).view(idx.shape)
            if shared:
                y = y.expand(len(self.members), -1)
            loss = self.step(x, y)
            loss_sum += loss  # stays on device: no host sync inside the batch loop
        return loss_sum.tolist(), loss.tolist()

    def _dropout(self, layer: int, h: torch.Tensor) -> torch.Tensor | None:
        """Scaled keep-mask [P, b, width] for hidden layer `layer`, or None if no dropout."""
        if self.dropout_first_only and layer > 0:
            return None
        live = [(pos, p) for pos, p in enumerate(self.p_drop) if p > 0]
        if not live:
            return None
        mask = torch.ones(h.shape, device=self.device)
        for pos, p in live:
            gen = self.drop_gens[self.members[pos]]
            keep = torch.rand(h.shape[1:], generator=gen, device=self.device) >= p
            mask[pos] = keep.to(h.dtype) / (1.0 - p)
        return mask

    def _first_layer(self, x: torch.Tensor) -> torch.Tensor:
        """[P, B, width]: one matmul for all members when x [B, 784] is shared."""
        if x.dim() == 3:
            return torch.baddbmm(self.b[0], x, self.W[0].transpose(1, 2))
        n, (out, inp) = len(self.members), self.shapes[0]
        h = torch.addmm(self.b[0].reshape(n * out), x, self.W[0].reshape(n * out, inp).t())
        return h.view(x.shape[0], n, out).transpose(0, 1)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Forward, backward and SGD update on one batch per member; returns loss [P].

        x is [B, 784] when every member sees the same batch, else [P, B, 784].
        """
        n_layers = len(self.W)
        inputs, relus, masks = [x], [], []
        for j in range(n_layers):
            h = self._first_layer(x) if j == 0 else \
                torch.baddbmm(self.b[j], inputs[j], self.W[j].transpose(1, 2))
            if j < n_layers - 1:
                h.relu_()
                relus.append(h)
                mask = self._dropout(j, h)
                masks.append(mask)
                inputs.append(h if mask is None else h * mask)
        target = y.unsqueeze(2)
        logp = torch.log_softmax(h, 2)
        loss = logp.gather(2, target).mean((1, 2)).neg_()
        g = logp.exp_()  # d(mean CE)/dz = (softmax - onehot) / batch
        g.scatter_add_(2, target, self._minus_one.expand_as(target))
        g.div_(y.shape[1])
        beta = self._decay()
        for j in range(n_layers - 1, -1, -1):
            self._accumulate(j, g, inputs[j], beta)
            if j > 0:
                g = torch.ops.aten.threshold_backward(torch.bmm(g, self.W[j]), relus[j - 1], 0.0)
                if masks[j - 1] is not None:
                    g.mul_(masks[j - 1])
        if self._penalised:
            loss = loss + self._penalty()
        if self.lr is not None:
            self.flat.add_(self.buf, alpha=-self.lr)
        else:
            self.flat.addcmul_(self.buf, self.neg_lr)
        return loss

    def _decay(self) -> float:
        """The beta for the gradient GEMMs: buf = beta * buf + grad.

        With one momentum for all members that is the momentum itself; with several, each
        member's block is scaled by its own momentum first and the GEMMs add with beta 1.
        """
        if self.beta is not None:
            return self.beta
        for v in self.vW + self.vb:
            v.mul_(self.momentum)
        return 1.0

    def _accumulate(self, j: int, g: torch.Tensor, a: torch.Tensor, beta: float) -> None:
        """buf[layer j] = beta * buf + gradient, for its weight and bias, in place."""
        vb = self.vb[j]
        if beta == 0.0:
            torch.sum(g, 1, keepdim=True, out=vb)
        else:
            if beta != 1.0:
                vb.mul_(beta)
            vb.add_(g.sum(1, keepdim=True))
        if j == 0 and a.dim() == 2:  # the fused first layer: one [P*width, 784] GEMM
            g_flat = g.transpose(0, 1).reshape(a.shape[0], -1)  # [B, P*width]
            self.vW[0].view(-1, a.shape[1]).addmm_(g_flat.t(), a, beta=beta)
        else:
            self.vW[j].baddbmm_(g.transpose(1, 2), a, beta=beta)

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
        correct = torch.zeros(len(self.members), device=self.device)
        for i in range(0, len(split), EVAL_CHUNK):
            x, y = split.x[i:i + EVAL_CHUNK], split.y[i:i + EVAL_CHUNK]
            h = self._first_layer(x)
            for j in range(1, len(self.W)):
                h = torch.baddbmm(self.b[j], h.relu_(), self.W[j].transpose(1, 2))
            correct += (h.argmax(2) == y).sum(1)
        return (100.0 * correct / len(split)).tolist()

    def drop(self, members: list[int]) -> None:
        """Remove members (original indices) from the stack."""
        if not members:
            return
        keep = [pos for pos, m in enumerate(self.members) if m not in members]
        if not keep:
            self.members = []
            return
        idx = torch.tensor(keep, device=self.device, dtype=torch.long)
        n = len(self.members)
        weights = [w.index_select(0, idx) for w in self.W]
        biases = [b.index_select(0, idx) for b in self.b]
        sizes = [w.numel() for w in self.W] + [b.numel() for b in self.b]
        bufs = [blk.view(n, -1).index_select(0, idx) for blk in torch.split(self.buf, sizes)]
        self.members = [self.members[pos] for pos in keep]
        self._load(weights, biases, bufs)

    def state_dict(self, pos: int, config: TrainConfig) -> dict[str, torch.Tensor]:
        """Member `pos` as the state_dict of build_mlp(config...)."""
        model = build_mlp(config.hidden, config.dropout, config.dropout_after)
        with torch.no_grad():
            for j, lin in enumerate(linear_layers(model)):
                lin.weight.copy_(self.W[j][pos])
                lin.bias.copy_(self.b[j][pos, 0])
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}

    def sparsity(self, pos: int, tol: float = 1e-3) -> tuple[float, float]:
        """(fraction exactly zero, fraction |w| < tol) of the penalised layer's parameters."""
        k = self.penalty_index
        return sparsity([self.W[k][pos], self.b[k][pos]], tol)
