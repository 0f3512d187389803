"""Shared fixtures: tiny synthetic IDX datasets the tests write themselves."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mnist_search import data as data_mod
from mnist_search.data import FILES, DatasetInfo, sha256_file
from mnist_search.data.synthetic import write_synthetic

REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu` tests skip, with the reason, where no CUDA device is present; -ra counts them."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="gpu: no CUDA device here (bench/gpu_check.sh runs these)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory dataset: 512 train / 128 test images, learnable, headers valid."""
    return write_synthetic(tmp_path_factory.mktemp("synth"), n_train=512, n_test=128, seed=0)


@pytest.fixture()
def tiny_pinned(synthetic_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                ) -> tuple[str, Path]:
    """A registered dataset 'tiny' with pinned hashes and counts, laid out like MNIST.

    Lets the corruption tests go through exactly the code path real MNIST uses.
    """
    info = DatasetInfo("tiny", "TINY", {f: sha256_file(synthetic_dir / f) for f in FILES},
                       ("npm",), counts=(512, 128))
    monkeypatch.setitem(data_mod.DATASETS, "tiny", info)
    root = tmp_path / "root"
    raw = root / "TINY" / "raw"
    raw.mkdir(parents=True)
    for f in FILES:
        shutil.copy(synthetic_dir / f, raw / f)
    data_mod.clear_cache()
    return "tiny", root


def real_data_root() -> Path:
    """Where CI's `make test` put verified MNIST (the Makefile fetches before pytest)."""
    return data_mod.default_root()


@pytest.fixture(scope="session")
def slow_synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4,096 train images: enough steps per epoch that a trial can be killed mid-way."""
    return write_synthetic(tmp_path_factory.mktemp("synth4k"), n_train=4096, n_test=256, seed=1)
