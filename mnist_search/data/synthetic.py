"""Tiny MNIST-format datasets for tests and demos: learnable, deterministic, written as IDX."""

from __future__ import annotations

import random
import struct
from pathlib import Path

from ..config import N_CLASSES
from .idx import FILES, IMAGE_MAGIC, LABEL_MAGIC

__all__ = ["idx_bytes", "write_synthetic"]

PIXELS = 28 * 28


def idx_bytes(kind: str, payload: bytes, count: int) -> bytes:
    """An IDX file: big-endian magic and count (plus 28x28 for images), then the payload."""
    if kind == "images":
        return struct.pack(">IIII", IMAGE_MAGIC, count, 28, 28) + payload
    return struct.pack(">II", LABEL_MAGIC, count) + payload


def _split(n: int, rng: random.Random, margin: int) -> tuple[bytes, bytes]:
    # Each class lights its own horizontal band of pixels, plus noise: a model that learns
    # anything at all separates them, which keeps tests quick and not flaky. Columns within
    # `margin` of the left and right edges are mostly 0, as near MNIST's borders: a pixel
    # next to the band is lit in 1 image in 64, and each column further out 4x more rarely,
    # so a batch's blank pixels differ from batch to batch, more of them near the edges.
    images, labels = bytearray(), bytearray()
    rows_per_class = 28 // N_CLASSES
    cols = range(margin, 28 - margin)
    rarity = [16 * 4 ** (margin - min(c, 27 - c)) for c in range(28)]
    for _ in range(n):
        label = rng.randrange(N_CLASSES)
        img = bytearray(rng.randrange(0, 60) if (i % 28) in cols else
                        (200 if rng.randrange(rarity[i % 28]) == 0 else 0)
                        for i in range(PIXELS))
        for r in range(label * rows_per_class, (label + 1) * rows_per_class):
            for c in cols:
                img[r * 28 + c] = 200 + rng.randrange(56)
        images += img
        labels.append(label)
    return bytes(images), bytes(labels)


def write_synthetic(directory: Path | str, n_train: int = 512, n_test: int = 128,
                    seed: int = 0, margin: int = 0) -> Path:
    """Write the four IDX files into `directory` (created) and return it.

    margin > 0 leaves that many columns on each side mostly blank.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images, labels = _split(n, rng, margin)
        (directory / f"{split}-images-idx3-ubyte").write_bytes(idx_bytes("images", images, n))
        (directory / f"{split}-labels-idx1-ubyte").write_bytes(idx_bytes("labels", labels, n))
    assert all((directory / f).exists() for f in FILES)
    return directory
