"""The hand-written training step over a stack of P same-shape MLPs.

Weights are stacked as [P, out, in] (nn.Linear's layout) and biases as [P, 1, out], so every
layer is one baddbmm/bmm for all members. The maths is exactly what autograd and
torch.optim.SGD(momentum, dampening=0) do for the notebook's loss, cross-entropy plus
lambda*sum|p| (L1) or lambda*sum p^2 (L2) over the weight and bias of one Linear layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .config import TrainConfig
from .data import Split
from .model import IN_FEATURES, N_CLASSES, build_mlp, linear_layers

EVAL_CHUNK = 10_000
_DROPOUT_SEED_OFFSET = 0x9E3779B9  # dropout masks get their own stream, apart from init/order


def _col(values: Sequence[float], device: str) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1, 1)


class Stack:
    """P models of one architecture, their momentum buffers and per-member settings."""

    def __init__(self, configs: Sequence[TrainConfig], device: str) -> None:
        self.device = device
        self.members = list(range(len(configs)))  # original indices of members still training
        c0 = configs[0]
        self.dropout_first_only = c0.dropout_after == "first"
        self.penalty_index = c0.penalty_layer - 1
        widths = [IN_FEATURES, *c0.hidden, N_CLASSES]
        self.shapes = list(zip(widths[1:], widths[:-1], strict=True))  # (out, in) per layer
        # All parameters of a member live in one row of `flat` (weights, then biases), so
        # the SGD update is three tensor ops for every parameter of every member at once.
        self.flat = torch.stack([self._init_flat(c) for c in configs]).to(device)
        self.grad = torch.zeros_like(self.flat)
        self.momentum_buf = torch.zeros_like(self.flat)
        self._bind_views()
        self.neg_lr = _col([-c.lr for c in configs], device)[:, :, 0]
        self.momentum = _col([c.momentum for c in configs], device)[:, :, 0]
        self.l1 = _col([c.l1 for c in configs], device)
        self.l2 = _col([c.l2 for c in configs], device)
        self.p_drop = [c.dropout for c in configs]
        self._l1_host = [c.l1 for c in configs]
        self._l2_host = [c.l2 for c in configs]
        self._penalised = any(c.l1 > 0 or c.l2 > 0 for c in configs)
        self._uses_momentum = any(c.momentum > 0 for c in configs)
        self._minus_one = torch.full((1, 1, 1), -1.0, device=device)
        self.drop_gens = [torch.Generator(device=device).manual_seed(c.seed + _DROPOUT_SEED_OFFSET)
                          for c in configs]

    def _bind_views(self) -> None:
        """W[j] [P, out, in] and b[j] [P, 1, out] as views into flat (and the same for grad)."""
        n = self.flat.shape[0]
        self.W, self.b, self.gW, self.gb = [], [], [], []
        offset = 0
        for out, inp in self.shapes:
            for src, dst in ((self.flat, self.W), (self.grad, self.gW)):
                dst.append(src[:, offset:offset + out * inp].view(n, out, inp))
            offset += out * inp
        for out, _ in self.shapes:
            for src, dst in ((self.flat, self.b), (self.grad, self.gb)):
                dst.append(src[:, offset:offset + out].view(n, 1, out))
            offset += out

    @staticmethod
    def _init_flat(config: TrainConfig) -> torch.Tensor:
        layers = Stack._init_layers(config)
        return torch.cat([w.flatten() for w, _ in layers] + [b for _, b in layers])

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
        """One pass over `split`, each member in its own order; (loss sums, last losses)."""
        order = torch.stack([perms[m] for m in self.members]).to(self.device)
        n = order.shape[1]
        loss_sum = torch.zeros(len(self.members), device=self.device)
        loss = loss_sum
        for i in range(0, n, batch_size):
            idx = order[:, i:i + batch_size]
            flat = idx.reshape(-1)
            x = split.x.index_select(0, flat).view(*idx.shape, -1)
            loss = self.step(x, split.y.index_select(0, flat).view(idx.shape))
            loss_sum += loss  # stays on device: no host sync inside the batch loop
        return loss_sum.tolist(), loss.tolist()

    def _dropout(self, layer: int, h: torch.Tensor) -> torch.Tensor | None:
        """Scaled keep-mask [P, b, width] for hidden layer `layer`, or None if no dropout."""
        if self.dropout_first_only and layer > 0:
            return None
        live = [(pos, self.p_drop[m]) for pos, m in enumerate(self.members)
                if self.p_drop[m] > 0]
        if not live:
            return None
        mask = torch.ones_like(h)
        for pos, p in live:
            gen = self.drop_gens[self.members[pos]]
            keep = torch.rand(h.shape[1:], generator=gen, device=self.device) >= p
            mask[pos] = keep.to(h.dtype) / (1.0 - p)
        return mask

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Forward, backward and SGD update on one batch per member; returns loss [P]."""
        n_layers = len(self.W)
        inputs, relus, masks = [x], [], []
        a = x
        for j in range(n_layers):
            h = torch.baddbmm(self.b[j], a, self.W[j].transpose(1, 2))
            if j < n_layers - 1:
                h.relu_()
                relus.append(h)
                mask = self._dropout(j, h)
                masks.append(mask)
                a = h if mask is None else h * mask
                inputs.append(a)
        target = y.unsqueeze(2)
        logp = torch.log_softmax(h, 2)
        loss = logp.gather(2, target).mean((1, 2)).neg_()
        g = logp.exp_()  # d(mean CE)/dz = (softmax - onehot) / batch
        g.scatter_add_(2, target, self._minus_one.expand_as(target))
        g.div_(x.shape[1])
        for j in range(n_layers - 1, -1, -1):
            torch.bmm(g.transpose(1, 2), inputs[j], out=self.gW[j])
            torch.sum(g, 1, keepdim=True, out=self.gb[j])
            if j > 0:
                g = torch.ops.aten.threshold_backward(torch.bmm(g, self.W[j]), relus[j - 1], 0.0)
                if masks[j - 1] is not None:
                    g.mul_(masks[j - 1])
        if self._penalised:
            loss = loss + self._penalty()
        self._sgd()
        return loss

    def _penalty(self) -> torch.Tensor:
        """Add the penalty's gradient in place; return its value per member."""
        k = self.penalty_index
        value = torch.zeros((), device=self.device)
        w, b = self.W[k], self.b[k]
        if any(self._l1_host[m] > 0 for m in self.members):
            self.gW[k].add_(torch.sign(w) * self.l1)
            self.gb[k].add_(torch.sign(b) * self.l1)
            value = value + self.l1.view(-1) * (w.abs().sum((1, 2)) + b.abs().sum((1, 2)))
        if any(self._l2_host[m] > 0 for m in self.members):
            self.gW[k].add_(w * (2 * self.l2))
            self.gb[k].add_(b * (2 * self.l2))
            value = value + self.l2.view(-1) * (w.square().sum((1, 2)) + b.square().sum((1, 2)))
        return value

    def _sgd(self) -> None:
        # torch.optim.SGD with dampening 0: buf = momentum * buf + grad; p -= lr * buf.
        # (Its first step sets buf = grad, which is the same thing from a zero buffer.)
        step = self.grad
        if self._uses_momentum:
            step = self.momentum_buf.mul_(self.momentum).add_(self.grad)
        self.flat.addcmul_(step, self.neg_lr)

    @torch.inference_mode()
    def accuracy(self, split: Split) -> list[float]:
        """Percent correct per member, in chunks; the first layer is one mm for all members."""
        n_members = len(self.members)
        correct = torch.zeros(n_members, device=self.device)
        w0 = self.W[0].reshape(-1, self.W[0].shape[2])  # [P*out, in]
        for i in range(0, len(split), EVAL_CHUNK):
            x, y = split.x[i:i + EVAL_CHUNK], split.y[i:i + EVAL_CHUNK]
            h = (x @ w0.T).view(x.shape[0], n_members, -1).transpose(0, 1) + self.b[0]
            for j in range(1, len(self.W)):
                h = torch.baddbmm(self.b[j], h.relu_(), self.W[j].transpose(1, 2))
            correct += (h.argmax(2) == y).sum(1)
        return (100.0 * correct / len(split)).tolist()

    def drop(self, members: list[int]) -> None:
        """Remove members (original indices) from the stack."""
        if not members:
            return
        keep = [pos for pos, m in enumerate(self.members) if m not in members]
        idx = torch.tensor(keep, device=self.device, dtype=torch.long)
        for name in ("flat", "grad", "momentum_buf", "neg_lr", "momentum", "l1", "l2"):
            setattr(self, name, getattr(self, name).index_select(0, idx))
        self.members = [self.members[pos] for pos in keep]
        self._bind_views()

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
        flat = torch.cat([self.W[k][pos].flatten(), self.b[k][pos].flatten()])
        return float((flat == 0).float().mean()), float((flat.abs() < tol).float().mean())
