"""Everything a run depends on, checked before the storage is touched.

A study that would fail in a worker (an unknown dataset, data that is missing or damaged, a
holdout larger than the train split, a device this machine lacks) is refused here in one
line, with nothing written. Missing data of a known dataset is fetched first, through the
same verified fallback chain as `mnist-search data fetch`, as torchvision's download=True
does. `check_spec` touches neither storage, data nor torch: `mnist-search check` uses it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ..config import RULES
from ..data import DATASETS, DataError, raw_dir, verify
from ..data.idx import FILES, check_header, is_custom
from ..errors import DeviceError, SpecError
from ..spec import StudySpec

__all__ = ["check_data", "check_device", "check_spec", "dataset_of", "preflight"]

log = logging.getLogger(__name__)

DATASET_ALLOWED = (f"{' or '.join(map(repr, DATASETS))}, or a directory holding the four "
                   "IDX files")


def dataset_of(spec: StudySpec) -> str:
    """The study's dataset: one per study, since [search] and references cannot change it."""
    return str(spec.fixed.get("dataset", "mnist"))


def check_spec(spec: StudySpec) -> None:
    """What validating the file alone cannot see: the dataset must name a known dataset or
    an existing directory."""
    dataset = dataset_of(spec)
    if dataset not in DATASETS and not Path(dataset).is_dir():
        raise SpecError.bad_value(spec.path, "fixed.dataset", dataset, DATASET_ALLOWED)


def check_data(spec: StudySpec, progress: Callable[[str, int], None] | None = None) -> None:
    """The data is present and verified (fetched first, if a known dataset is missing), and
    the holdout fits in its train split."""
    dataset = dataset_of(spec)
    try:
        verify(dataset)
    except DataError as exc:
        if is_custom(dataset) or any((raw_dir(dataset) / f).exists() for f in FILES):
            raise  # damaged files, or a custom directory: fetching would not help
        from ..data.fetch import fetch

        log.info("%s is not in %s: fetching it", dataset, raw_dir(dataset))
        try:
            fetch(dataset, progress=progress)
        except DataError as fetch_exc:
            raise DataError(f"{exc}; fetching failed too: {fetch_exc}") from None
    val_size = int(spec.fixed.get("val_size", 0))
    n_train = check_header(raw_dir(dataset) / FILES[1], dataset, None)
    if val_size >= n_train:
        raise SpecError.bad_value(spec.path, "fixed.val_size", val_size,
                                  f"fewer than the {n_train} images of {dataset}'s train split")


def check_device(device: str) -> None:
    """A device that is unknown, or not on this machine (only an accelerator's check imports
    torch: 'auto' and 'cpu' always work)."""
    check, allowed = RULES["device"]
    if not check(device):
        raise DeviceError(f"--device {device!r} is not known: expected {allowed}")
    if device.startswith("cuda") or device == "mps":
        from ..training.train import resolve_device

        resolve_device(device)


def preflight(spec: StudySpec, device: str,
              progress: Callable[[str, int], None] | None = None) -> None:
    check_spec(spec)
    check_device(device)
    check_data(spec, progress)
