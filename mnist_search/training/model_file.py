"""Trained models as safetensors files: the weights, and in the file's metadata everything
needed to rebuild and judge them (config, accuracies, data digest, versions). Opening one
never runs code (no pickle), and needs neither the study nor its storage.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..config import TrainConfig, mlp_parameters
from ..data import Data
from ..data.idx import NORMALIZE_MEAN, NORMALIZE_STD
from ..errors import UsageError
from ..files import replacing
from .engine import Stack
from .mlp import build_mlp, linear_layers

__all__ = ["FORMAT", "MnistMLP", "ModelFileError", "evaluate_model_file", "load_model",
           "read_model_file", "save_model_file"]

FORMAT = "mnist-search-mlp/1"


class ModelFileError(UsageError):
    """A file that is not a readable mnist-search model."""


class MnistMLP(nn.Module):
    """The trained MLP with its input handling: images scaled to [0, 1], as [N, 784] or
    [N, 1, 28, 28]; the normalization its config trained with is applied inside."""

    def __init__(self, config: TrainConfig) -> None:
        super().__init__()
        self.config = config
        self.net = build_mlp(config.hidden, config.dropout, config.dropout_after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        if self.config.normalize:
            x = (x - NORMALIZE_MEAN) / NORMALIZE_STD
        out: torch.Tensor = self.net(x)
        return out


def save_model_file(path: str | Path, config: TrainConfig, state_dict: Mapping[str, torch.Tensor],
                    metadata: Mapping[str, str]) -> None:
    """Write the model whole or not at all: a temporary file beside it, then a rename. A
    disk that is full or read-only is an OSError, whichever layer noticed it."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    meta = {"format": FORMAT, "config": json.dumps(config.to_dict()),
            "torch_version": str(torch.__version__), **metadata}
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    try:
        with replacing(Path(path)) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
    except SafetensorError as exc:  # its I/O errors arrive wrapped
        raise OSError(" ".join(str(exc).split())) from exc


def read_model_file(path: str | Path) -> tuple[TrainConfig, dict[str, str],
                                              dict[str, torch.Tensor]]:
    """(config, metadata, tensors) of a model file; ModelFileError if it is not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    from safetensors import safe_open

    # the header first (its metadata and shapes), the tensors only once the config, bounded
    # by TrainConfig, says how many weights there are: a file's size or its lying metadata
    # never decides what is mapped or allocated
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            shapes = {k: fh.get_slice(k).get_shape() for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a safetensors file ({_short(exc)})") from None
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an mnist-search model (format "
                             f"{_short(meta.get('format'))!r}, expected {FORMAT!r})")
    try:
        config = TrainConfig(**json.loads(meta["config"]))
    except (KeyError, ValueError, TypeError, RecursionError) as exc:
        raise ModelFileError(f"{path}: its config cannot be read ({_short(exc)})") from None
    expected = mlp_parameters(config.hidden)
    stored = sum(math.prod(shape) for shape in shapes.values())
    if expected != stored:
        raise ModelFileError(f"{path}: its config ({config.architecture}, {expected:,} "
                             f"parameters) does not match its {stored:,} stored weights")
    if path.stat().st_size > 4 * expected + len(json.dumps(meta)) + 1_000_000:
        raise ModelFileError(f"{path}: {path.stat().st_size:,} bytes is more than "
                             f"{expected:,} float32 weights and their metadata take")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a safetensors file ({_short(exc)})") from None
    return config, meta, tensors


def _short(value: object) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= 200 else f"{text[:180]}... ({len(text):,} characters)"


def load_model(path: str | Path) -> MnistMLP:
    """The model in a file, in eval mode, on the CPU: `load_model(f)(images).argmax(1)`."""
    config, _, tensors = read_model_file(path)
    model = MnistMLP(config)
    try:
        model.net.load_state_dict(tensors)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not fit its config ({exc})") from None
    return model.eval()


def evaluate_model_file(path: str | Path, data: Data, device: str = "cpu") -> float:
    """Test accuracy (percent) of the model in a file, computed as training scored it."""
    model = load_model(path)
    linears = [(lin.weight.detach().to(device), lin.bias.detach().to(device))
               for lin in linear_layers(model.net)]
    return Stack.alone(model.config, linears, device).accuracy(data.test)[0]
