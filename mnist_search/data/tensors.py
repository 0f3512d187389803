"""Loading verified IDX files into tensors, once per process: uint8 as read, float once.

Every trial then slices the same device-resident tensors: no DataLoader, no per-sample
transforms.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import N_CLASSES
from ..errors import DataError, DataInputError
from .idx import (
    COLS,
    NORMALIZE_MEAN,
    NORMALIZE_STD,
    ROWS,
    combined_digest,
    dataset_info,
    is_custom,
    raw_dir,
    refetch_hint,
    verify,
)

if TYPE_CHECKING:
    import torch

__all__ = ["Data", "RawData", "Split", "clear_cache", "epoch_order", "load_data", "load_raw"]


def _read_idx_u8(path: Path, header_len: int, digest: str, dataset: str) -> torch.Tensor:
    """The file's items, after checking that the bytes read are the ones verified: the
    checksum cache trusts a file whose size and mtime are unchanged, and an edit that kept
    both would otherwise train (and record the pinned digest) silently."""
    import torch

    raw = path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != digest:
        raise DataError(f"{path}: its content changed since it was verified (SHA-256 "
                        f"{hashlib.sha256(raw).hexdigest()[:16]}..., verified "
                        f"{digest[:16]}...); {refetch_hint(dataset)}")
    return torch.frombuffer(bytearray(raw[header_len:]), dtype=torch.uint8)


@dataclass(frozen=True)
class RawData:
    """uint8 images [N, 784] and int64 labels [N] for train and test, as on disk."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    digest: str


_RAW: dict[tuple[str, str], RawData] = {}  # per process: read once


def load_raw(dataset: str = "mnist", root: Path | str | None = None) -> RawData:
    """Verify, then read the four files once per process (cached)."""
    directory = raw_dir(dataset, root)
    key = (dataset, os.path.realpath(directory))  # (realpath: no error on a symlink loop)
    if key in _RAW:
        return _RAW[key]
    if not is_custom(dataset):
        dataset_info(dataset)
    elif not directory.is_dir():
        dataset_info(dataset)  # raises the "unknown dataset" message
    digests = verify(dataset, directory=directory)
    parts: list[torch.Tensor] = []
    for split in ("train", "t10k"):
        images, labels = f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"
        x = _read_idx_u8(directory / images, 16, digests[images], dataset).view(-1, ROWS * COLS)
        y = _read_idx_u8(directory / labels, 8, digests[labels], dataset).long()
        if y.numel() and int(y.max()) >= N_CLASSES:
            raise DataError(f"{directory / f'{split}-labels-idx1-ubyte'}: label {int(y.max())} "
                            f"outside 0..{N_CLASSES - 1}; {refetch_hint(dataset)}")
        parts += [x, y]
    raw = RawData(parts[0], parts[1], parts[2], parts[3], digest=combined_digest(digests))
    _RAW[key] = raw
    return raw


@dataclass(frozen=True)
class Split:
    """float32 images [N, 784] scaled to [0, 1] (as ToTensor does) and int64 labels [N]."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Data:
    name: str
    train: Split
    test: Split
    val: Split | None
    digest: str  # the four files' combined SHA-256
    holdout_digest: str | None = None  # which train images are held out (None: no holdout)


_LOADED: dict[tuple[object, ...], Data] = {}


def load_data(dataset: str = "mnist", root: Path | str | None = None, *, val_size: int = 0,
              val_seed: int = 0, device: str = "cpu", normalize: bool = False) -> Data:
    """Tensors for training, converted once per process and cached.

    Args:
        val_size: images carved out of train as a validation holdout, chosen by a randperm
            seeded with `val_seed`; the rest stays in train in its original order.
    """
    import torch

    folder = raw_dir(dataset, root)
    try:
        where = str(folder.resolve())
    except (OSError, RuntimeError) as exc:  # a symlink loop: pathlib raises RuntimeError
        kind = DataInputError if is_custom(dataset) else DataError
        raise kind(f"{folder}: {' '.join(str(exc).split())}; {refetch_hint(dataset)}") from None
    key = (dataset, where, val_size, val_seed, device, normalize)
    if key in _LOADED:
        return _LOADED[key]
    raw = load_raw(dataset, root)
    n_train = raw.train_y.shape[0]
    if not 0 <= val_size < n_train:
        raise DataError(f"val_size = {val_size} is not allowed: expected 0 <= val_size < "
                        f"{n_train} (the train split's size)")

    def to_float(x: torch.Tensor) -> torch.Tensor:
        out = x.to(device=device, dtype=torch.float32).div_(255.0)
        return out.sub_(NORMALIZE_MEAN).div_(NORMALIZE_STD) if normalize else out

    train_x, train_y = to_float(raw.train_x), raw.train_y.to(device)
    val, holdout = None, None
    if val_size:
        perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(val_seed))
        holdout = hashlib.sha256(perm[:val_size].numpy().tobytes()).hexdigest()[:16]
        val_idx, train_idx = perm[:val_size].to(device), perm[val_size:].sort().values.to(device)
        val = Split(train_x[val_idx], train_y[val_idx])
        train_x, train_y = train_x[train_idx], train_y[train_idx]
    data = Data(dataset, Split(train_x.contiguous(), train_y),
                Split(to_float(raw.test_x), raw.test_y.to(device)), val, raw.digest, holdout)
    _LOADED[key] = data
    return data


def epoch_order(n: int, generator: torch.Generator) -> torch.Tensor:
    """A fresh permutation of 0..n-1 for one epoch (shuffle=True without a DataLoader)."""
    import torch

    return torch.randperm(n, generator=generator)


def clear_cache() -> None:
    """Forget what this process loaded (tests that rewrite data files call this)."""
    _RAW.clear()
    _LOADED.clear()
