"""The MLP: Linear/ReLU stack 784 -> hidden... -> 10, with the notebook's dropout placement."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..config import IN_FEATURES, N_CLASSES, mlp_parameters

__all__ = ["build_mlp", "linear_layer", "linear_layers", "parameter_count", "sparsity"]


def build_mlp(hidden: Sequence[int] = (128, 64), dropout: float = 0.0,
              dropout_after: str = "first") -> nn.Sequential:
    """Flatten, then Linear+ReLU per hidden width, then Linear to 10 logits.

    Args:
        dropout_after: "first" puts Dropout after the first hidden ReLU only (the notebook's
            MyNetworkWithDropout); "all" after every hidden ReLU. No Dropout when dropout == 0.

    Layers are created in order fc1, fc2, ..., so under the same torch seed the initial
    weights equal those of the notebook's hand-written classes.
    """
    if dropout_after not in ("first", "all"):
        raise ValueError(f"dropout_after must be 'first' or 'all', got {dropout_after!r}")
    layers: list[nn.Module] = [nn.Flatten()]
    width = IN_FEATURES
    for i, out in enumerate(hidden):
        layers += [nn.Linear(width, out), nn.ReLU()]
        if dropout > 0 and (dropout_after == "all" or i == 0):
            layers.append(nn.Dropout(dropout))
        width = out
    layers.append(nn.Linear(width, N_CLASSES))
    return nn.Sequential(*layers)


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The Linear layers in forward order; index 1 (1-based) is fc2 in the notebook's naming."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def linear_layer(model: nn.Module, index: int) -> nn.Linear:
    """The `index`-th Linear layer, 1-based: linear_layer(model, 2) is the notebook's fc2."""
    layers = linear_layers(model)
    if not 1 <= index <= len(layers):
        raise IndexError(f"layer {index} does not exist: the model has {len(layers)} Linear "
                         "layers")
    return layers[index - 1]


def parameter_count(model_or_hidden: nn.Module | Sequence[int]) -> int:
    """Trainable parameters of a model, or of the MLP with these hidden widths."""
    if isinstance(model_or_hidden, nn.Module):
        return sum(p.numel() for p in model_or_hidden.parameters() if p.requires_grad)
    return mlp_parameters(tuple(model_or_hidden))


def sparsity(layer: nn.Linear | Sequence[torch.Tensor], tol: float = 1e-3
             ) -> tuple[float, float]:
    """(fraction exactly zero, fraction with |w| < tol) over a layer's weight and bias
    (or over the given tensors)."""
    tensors = list(layer.parameters()) if isinstance(layer, nn.Module) else list(layer)
    with torch.no_grad():
        flat = torch.cat([t.flatten() for t in tensors])
        return float((flat == 0).float().mean()), float((flat.abs() < tol).float().mean())
