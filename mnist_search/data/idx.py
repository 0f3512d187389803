"""MNIST-style IDX files: the known datasets, where their files live, headers and SHA-256.

Files live in torchvision's layout, `<root>/MNIST/raw/*-ubyte` (FashionMNIST for Fashion-MNIST),
so a copy torchvision already downloaded is used as it is. Everything here raises DataError
with one line that names the file, what was expected and what was found. No torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError, DataInputError

__all__ = ["COLS", "DATASETS", "DatasetInfo", "FILES", "IMAGE_MAGIC", "LABEL_MAGIC",
           "NORMALIZE_MEAN", "NORMALIZE_STD", "ROWS", "check_header", "combined_digest",
           "dataset_info", "default_root", "is_custom", "raw_dir", "refetch_hint", "sha256_file",
           "verify"]

log = logging.getLogger(__name__)

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
ROWS = COLS = 28
NORMALIZE_MEAN, NORMALIZE_STD = 0.1307, 0.3081  # MNIST's train statistics, as in PyTorch examples


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    folder: str  # torchvision's class name, which is its folder under root
    sha256: dict[str, str]
    sources: tuple[str, ...]  # fallback sources tried by `auto` after local and torchvision
    counts: tuple[int, int] = (60_000, 10_000)  # items in train, test


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist", "MNIST",
        {
            "train-images-idx3-ubyte":
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte":
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte":
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte":
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        ("npm",),
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", "FashionMNIST",
        {
            "train-images-idx3-ubyte":
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte":
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte":
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte":
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        ("debian",),
    ),
}


def default_root() -> Path:
    """--root beats env MNIST_SEARCH_DATA beats ./data."""
    return Path(os.environ.get("MNIST_SEARCH_DATA") or "data")


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataInputError(
            f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)} "
            "or a directory holding the four IDX files"
        ) from None


def raw_dir(dataset: str, root: Path | str | None = None) -> Path:
    """Where the four raw files of a dataset live (a custom directory is its own raw dir)."""
    if dataset not in DATASETS:
        return Path(dataset)
    return Path(root if root is not None else default_root()) / DATASETS[dataset].folder / "raw"


def is_custom(dataset: str) -> bool:
    return dataset not in DATASETS


def refetch_hint(dataset: str) -> str:
    if is_custom(dataset):
        return "rewrite the files in that directory"
    return f"re-fetch with: mnist-search data fetch --dataset {dataset} --force"


MAX_ITEMS = 10_000_000  # items an IDX file may claim: 7.8 GB of 28x28 images


def check_header(path: Path, dataset: str, expected_count: int | None) -> int:
    """Check magic, count and size of one IDX file; return its item count. In a folder the
    user named (not a fetched dataset), what is wrong is bad input: DataInputError."""
    kind = DataInputError if is_custom(dataset) else DataError
    try:
        return _check_header(path, dataset, expected_count)
    except OSError as exc:  # a symlink loop, a permission, a folder where a file should be
        raise kind(f"{path}: {exc.strerror or exc}; {refetch_hint(dataset)}") from None
    except DataError as exc:
        if kind is DataError:
            raise
        raise kind(str(exc)) from None


def _check_header(path: Path, dataset: str, expected_count: int | None) -> int:
    name = path.name
    images = "images" in name
    if not path.is_file():
        if path.is_symlink() and not path.exists():
            path.stat()  # a dangling link or a loop: its own error (OSError), not "missing"
        raise DataError(f"{path}: file is missing; {refetch_hint(dataset)}")
    size = path.stat().st_size
    header_len = 16 if images else 8
    with path.open("rb") as fh:
        header = fh.read(header_len)
    if len(header) < header_len:
        raise DataError(f"{path}: {size} bytes is too short for an IDX header; "
                        f"{refetch_hint(dataset)}")
    magic, count = struct.unpack(">II", header[:8])
    if count > MAX_ITEMS:  # before its size is trusted, or the file hashed
        raise DataError(f"{path}: header says {count:,} items; at most {MAX_ITEMS:,} are read "
                        f"({MAX_ITEMS * ROWS * COLS / 1e9:.0f} GB of images); "
                        f"{refetch_hint(dataset)}")
    if count == 0:
        raise DataError(f"{path}: holds no items (its header says 0); "
                        f"{refetch_hint(dataset)}")
    want_magic = IMAGE_MAGIC if images else LABEL_MAGIC
    if magic != want_magic:
        raise DataError(f"{path}: IDX magic is {magic}, expected {want_magic}; "
                        f"{refetch_hint(dataset)}")
    if expected_count is not None and count != expected_count:
        counts = DATASETS[dataset].counts if dataset in DATASETS else ()
        hint = " (train and test files swapped?)" if count in counts else ""
        raise DataError(f"{path}: header says {count} items, expected {expected_count}{hint}; "
                        f"{refetch_hint(dataset)}")
    if images:
        rows, cols = struct.unpack(">II", header[8:16])
        if (rows, cols) != (ROWS, COLS):
            raise DataError(f"{path}: images are {rows}x{cols}, expected {ROWS}x{COLS}; "
                            f"{refetch_hint(dataset)}")
    want_size = header_len + count * (ROWS * COLS if images else 1)
    if size != want_size:
        raise DataError(f"{path}: {size} bytes, expected {want_size} for {count} items "
                        f"(truncated or extended); {refetch_hint(dataset)}")
    return int(count)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


_CACHE_NAME = ".sha256-cache.json"


def _read_cache(directory: Path) -> dict[str, list[Any]]:
    try:
        cache = json.loads((directory / _CACHE_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def _write_cache(directory: Path, cache: dict[str, list[Any]]) -> None:
    tmp = directory / (_CACHE_NAME + ".tmp")
    try:
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, directory / _CACHE_NAME)
    except OSError:  # a read-only data dir still loads; it just hashes again next time
        log.debug("could not write %s", directory / _CACHE_NAME)


def verify(dataset: str = "mnist", root: Path | str | None = None,
           directory: Path | None = None, use_cache: bool = True) -> dict[str, str]:
    """Check headers and SHA-256 of the four files; return {file: sha256}.

    Hashes are cached keyed by (size, mtime), so a load after the first costs a stat per file.
    """
    directory = directory if directory is not None else raw_dir(dataset, root)
    try:
        directory.stat()  # a folder-level symlink loop is one line, here
    except FileNotFoundError:
        pass  # a missing folder: each file "is missing" below, which is what to fetch
    except OSError as exc:
        kind = DataInputError if is_custom(dataset) else DataError
        raise kind(f"{directory}: {exc.strerror or exc}; {refetch_hint(dataset)}") from None
    pinned = None if is_custom(dataset) else DATASETS[dataset].sha256
    cache = _read_cache(directory)
    digests: dict[str, str] = {}
    changed = False
    for name in FILES:
        path = directory / name
        expected_count = None
        if pinned is not None:
            expected_count = DATASETS[dataset].counts[0 if name.startswith("train") else 1]
        check_header(path, dataset, expected_count)
        st = path.stat()
        key = [st.st_size, st.st_mtime_ns]
        hit = cache.get(name)
        if use_cache and hit and hit[:2] == key:
            digest = hit[2]
        else:
            digest = sha256_file(path)
            cache[name] = [*key, digest]
            changed = True
        if pinned is not None and digest != pinned[name]:
            raise DataError(f"{path}: SHA-256 is {digest}, expected {pinned[name]}; "
                            f"{refetch_hint(dataset)}")
        digests[name] = digest
    if is_custom(dataset):
        _check_pairs(directory)
    if changed:
        _write_cache(directory, cache)
    return digests


def _check_pairs(directory: Path) -> None:
    """A custom directory has no pinned counts: images and labels must at least agree."""
    for split in ("train", "t10k"):
        n_img = check_header(directory / f"{split}-images-idx3-ubyte", str(directory), None)
        n_lab = check_header(directory / f"{split}-labels-idx1-ubyte", str(directory), None)
        if n_img != n_lab:
            raise DataInputError(f"{directory / f'{split}-labels-idx1-ubyte'}: {n_lab} labels "
                            f"for {n_img} images; rewrite the files in that directory")


def combined_digest(digests: dict[str, str]) -> str:
    """One short hash naming the exact data a trial saw (stored on every trial)."""
    h = hashlib.sha256("".join(digests[n] for n in FILES).encode())
    return h.hexdigest()[:16]
