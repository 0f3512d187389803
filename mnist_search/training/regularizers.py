"""The regularizers of a stack's step: dropout masks, input dropout, the L1/L2 penalty of
one layer, and max-norm.

Each works on the stack's per-member tensors and draws from each member's own generator,
so a member's masks are the ones it would draw trained alone (a padded member draws at its
own widths only, and so never touches its padding).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..config import IN_FEATURES

__all__ = ["add_penalty", "dropout_masks", "input_dropout", "renorm"]


def dropout_masks(batch: int, layers: Sequence[tuple[bool, int]], p_drop: Sequence[float],
                  own_widths: Sequence[Sequence[int]], gens: Sequence[torch.Generator],
                  device: str) -> list[torch.Tensor | None]:
    """Scaled keep-masks [P, batch, width] per hidden layer (None: no dropout there).

    `layers` is (masked, stack width) per hidden layer; p_drop, own_widths (each member's
    widths per hidden layer) and gens are per live member. Drawn member by member, layer
    by layer, in the order a member's own loop would draw them.
    """
    masks: list[torch.Tensor | None] = []
    for layer, (masked, width) in enumerate(layers):
        if not masked:
            masks.append(None)
            continue
        mask = torch.ones((len(p_drop), batch, width), device=device)
        for pos, p in enumerate(p_drop):
            if p > 0:
                own = own_widths[pos][layer]
                keep = torch.rand((batch, own), generator=gens[pos], device=device) >= p
                mask[pos, :, :own] = keep.to(mask.dtype) / (1.0 - p)
        masks.append(mask)
    return masks


def input_dropout(x: torch.Tensor, p_input: Sequence[float], gens: Sequence[torch.Generator],
                  order: torch.Tensor | None) -> torch.Tensor:
    """x [B, k] or [P, B, k] with each member's input-dropout mask applied: [P, B, k].

    A member's mask is drawn over all 784 pixels in their natural order (as a plain loop
    draws it), then put in the stored column `order` (if any) and cut to the batch's k.
    """
    batch, k = x.shape[-2], x.shape[-1]
    mask = torch.ones((len(p_input), batch, k), device=x.device)
    for pos, p in enumerate(p_input):
        if p > 0:
            keep = torch.rand((batch, IN_FEATURES), generator=gens[pos], device=x.device) >= p
            if order is not None:
                keep = keep.index_select(1, order)
            mask[pos] = keep[:, :k].to(mask.dtype) / (1.0 - p)
    return x * mask


def add_penalty(w: torch.Tensor, b: torch.Tensor, grad_w: torch.Tensor, grad_b: torch.Tensor,
                l1: torch.Tensor | None, l2: torch.Tensor | None) -> torch.Tensor:
    """Add the penalty's gradient on layer (w, b) to (grad_w, grad_b); its value per member.

    l1 and l2 are [P, 1, 1] lambdas, None when no member has that penalty: lambda*sum|p|
    and lambda*sum p^2 over the layer's weight and bias, as the notebook writes them.
    """
    value = torch.zeros((), device=w.device)
    if l1 is not None:
        grad_w.add_(torch.sign(w) * l1)
        grad_b.add_(torch.sign(b) * l1)
        value = value + l1.view(-1) * (w.abs().sum((1, 2)) + b.abs().sum((1, 2)))
    if l2 is not None:
        grad_w.add_(w * (2 * l2))
        grad_b.add_(b * (2 * l2))
        value = value + l2.view(-1) * (w.square().sum((1, 2)) + b.square().sum((1, 2)))
    return value


def renorm(weights: Sequence[torch.Tensor], limit: torch.Tensor) -> None:
    """Max-norm: rescale each hidden unit's incoming weights ([P, out, in] views) to norm
    <= its member's limit ([P, 1, 1], inf for none), with torch.renorm's factor
    limit / (norm + 1e-7)."""
    for w in weights:
        norm = torch.linalg.vector_norm(w, dim=2, keepdim=True)
        w.mul_(torch.where(norm > limit, limit / (norm + 1e-7), 1.0))
