"""The flat layout of a stack's parameters: one buffer holding every member's every layer.

Each layer's weights for all P members are one contiguous block (then the biases), so an
optimizer's update is one op over everything and the first layer of all members is one
matrix for the fused matmul. The first layer is stored transposed, [784, P*out]: a row per
input pixel, so the rows of pixels that are zero in a whole batch can be left out. Every
buffer laid out like the parameters (gradients, momentum, an optimizer's state, a per-member
lr) goes through the same two functions, so their views always line up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from ..config import IN_FEATURES, N_CLASSES

__all__ = ["Layout", "column", "layer_shapes"]


def layer_shapes(hidden: Sequence[int]) -> list[tuple[int, int]]:
    """(out, in) of each Linear layer of the MLP 784 -> hidden... -> 10."""
    widths = [IN_FEATURES, *hidden, N_CLASSES]
    return list(zip(widths[1:], widths[:-1], strict=True))


def column(values: Sequence[float], device: str) -> torch.Tensor:
    """One value per member as [P, 1, 1], to broadcast over each member's block."""
    return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1, 1)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where each layer of each member lives in a flat buffer of a stack of this shape."""

    shapes: tuple[tuple[int, int], ...]  # (out, in) per layer
    device: str

    def first_size(self, n: int) -> int:
        """How many values the n members' first layers take, at the buffer's start."""
        out, inp = self.shapes[0]
        return n * out * inp

    def flatten(self, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor]
                ) -> torch.Tensor:
        """Per-layer [P, out, in] weights and [P, 1, out] biases as one flat buffer."""
        first = weights[0].permute(2, 0, 1).reshape(-1)
        rest = [t.reshape(-1) for t in [*weights[1:], *biases]]
        return torch.cat([first, *rest]).to(self.device)

    def views(self, buffer: torch.Tensor, n: int) -> list[torch.Tensor]:
        """Views of a flat buffer of n members: per layer [P, out, in] weights (the first
        layer's a transposed view), then per layer [P, 1, out] biases."""
        (out0, in0), offset = self.shapes[0], self.first_size(n)
        views = [buffer[:offset].view(in0, n, out0).permute(1, 2, 0)]
        for out, inp in self.shapes[1:]:
            views.append(buffer[offset:offset + n * out * inp].view(n, out, inp))
            offset += n * out * inp
        for out, _ in self.shapes:
            views.append(buffer[offset:offset + n * out].view(n, 1, out))
            offset += n * out
        return views

    def first_rows(self, buffer: torch.Tensor, n: int) -> torch.Tensor:
        """The n members' first layers as one [784, P*out] matrix, a row per pixel."""
        out, inp = self.shapes[0]
        return buffer[:self.first_size(n)].view(inp, n * out)

    def select(self, buffer: torch.Tensor, n: int, keep: torch.Tensor) -> torch.Tensor:
        """A new flat buffer holding only the members at positions `keep` (a long tensor)."""
        kept = [v.index_select(0, keep) for v in self.views(buffer, n)]
        layers = len(self.shapes)
        return self.flatten(kept[:layers], kept[layers:])

    def per_member(self, values: Sequence[float]) -> torch.Tensor:
        """A flat buffer holding each member's value at each of its parameters."""
        v, n = column(values, self.device), len(values)
        return self.flatten([v.expand(n, out, inp) for out, inp in self.shapes],
                            [v.expand(n, 1, out) for out, _ in self.shapes])

    def value(self, values: Sequence[float]) -> float | torch.Tensor:
        """One value for all members as a float, else each member's at each parameter."""
        return values[0] if len(set(values)) == 1 else self.per_member(values)
