"""A member into a stack and out of it: its own layers, as nn.Linear holds them.

A member enters at nn.Linear's own init under its seed, zero-padded to the stack's shapes.
A stack stores the first layer transposed (rows possibly in a CPU pixel order) and pads a
bucketed member to the bucket's widths; what leaves it is the member's own model: each
layer's [out, in] weight in nn.Linear's column order, at the member's own widths, a copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..config import TrainConfig
from .mlp import build_mlp, linear_layers, sparsity

__all__ = ["Linears", "initial_linears", "member_linears", "member_sparsity", "member_state_dict"]

Linears = list[tuple[torch.Tensor, torch.Tensor]]  # (weight [out, in], bias [out]) per layer


def initial_linears(config: TrainConfig, shapes: Sequence[tuple[int, int]]) -> Linears:
    """nn.Linear's own init of the member's model under its seed (without touching the
    global RNG), zero-padded to the stack's (out, in) `shapes`, on the CPU.

    Padded units then stay exactly zero under every update: with zero weights in and out,
    a padded unit's output, its gradient and every gradient through it are 0, and so are
    its penalty, decay and optimizer state. A padded member computes its own model's
    function; only the shapes of the sums around it change.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_mlp(config.hidden)
    layers = []
    for (out, inp), lin in zip(shapes, linear_layers(model), strict=True):
        w, b = torch.zeros(out, inp, device="cpu"), torch.zeros(out, device="cpu")
        w[:lin.out_features, :lin.in_features] = lin.weight.detach()
        b[:lin.out_features] = lin.bias.detach()
        layers.append((w, b))
    return layers


def member_linears(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], pos: int,
                   own: Sequence[tuple[int, int]], inverse: torch.Tensor | None) -> Linears:
    """Member `pos`'s layers from a stack's [P, out, in] weight and [P, 1, out] bias views;
    `own` is its (out, in) per layer, `inverse` the pixel order's inverse, if any."""
    layers = []
    for j, (out, inp) in enumerate(own):
        w = weights[j][pos]
        if j == 0 and inverse is not None:
            w = w.index_select(1, inverse)
        layers.append((w[:out, :inp].clone(), biases[j][pos, 0, :out].clone()))
    return layers


def member_state_dict(linears: Linears, config: TrainConfig) -> dict[str, torch.Tensor]:
    """The layers as the state_dict of build_mlp(config...), on the CPU."""
    model = build_mlp(config.hidden, config.dropout, config.dropout_after)
    with torch.no_grad():
        for (w, b), lin in zip(linears, linear_layers(model), strict=True):
            lin.weight.copy_(w)
            lin.bias.copy_(b)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def member_sparsity(linears: Linears, layer: int, tol: float = 1e-3) -> tuple[float, float]:
    """(fraction exactly zero, fraction |w| < tol) of one layer's weight and bias."""
    return sparsity(list(linears[layer]), tol)
