"""A worker's start-up: each phase logged at debug level, in order, up to the first training
epoch; and the pixel order a CPU worker computes while it starts is the one it always was."""

from __future__ import annotations

import re
import subprocess

import pytest
import torch

from mnist_search.training.pixels import PixelOrder

from helpers import exe, write_study

STUDY = """
trials = 2
[sampler]
kind = "random"
[fixed]
dataset = DATA
epochs = 1
hidden = [16]
[search]
lr = { low = 0.01, high = 0.1, log = true }
"""
PHASES = ["worker module loaded", "imports", "device", "data on the device", "pixel order",
          "warmed up, waiting for orders", "orders received", "torch and device ready",
          "storage and study opened", "first training epoch starts"]


def test_each_start_up_phase_is_logged_in_order(tmp_path, synthetic_dir):
    spec = write_study(tmp_path / "s.toml", synthetic_dir, STUDY)
    proc = subprocess.run([exe("mnist-search"), "-v", "run", str(spec), "--storage",
                           f"sqlite:///{tmp_path / 's.db'}", "--workers", "2"],
                          capture_output=True, text=True, timeout=300)
    err = proc.stderr
    assert proc.returncode == 0, err
    assert "do not fit this run" not in err  # the workers the CLI started early trained
    lines = [ln for ln in err.splitlines() if "start-up (s since the command started)" in ln]
    assert lines, err  # one per worker that trained (a worker may find nothing to claim)
    for line in lines:
        found = re.findall(r"([a-z ,]+?) (\d+\.\d\d)(?:,|$)", line.split("): ", 1)[1])
        names = [n.strip(" ,") for n, _ in found]
        times = [float(t) for _, t in found]
        assert names == PHASES, line
        assert times == sorted(times) and times[0] >= 0, line
    # each worker's ledger as it ends: its time in all, the sampler's and the storage's
    ledgers = re.findall(r"time in all ([\d.]+) s, sampler ([\d.]+) s, storage ([\d.]+) s, "
                         r"the rest \(training, waits\) (-?[\d.]+) s", err)
    assert len(ledgers) == 2, err
    for wall, sampler, storage, rest in (tuple(map(float, g)) for g in ledgers):
        assert storage > 0 and wall == pytest.approx(sampler + storage + rest, abs=2e-3)


def reference_order(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The order and extents as first written: float arithmetic, int64 counts."""
    nonzero = torch.zeros(x.shape[1], dtype=torch.int64)
    for i in range(0, len(x), 7):
        nonzero += x[i:i + 7].ne(0).sum(0)
    order = torch.argsort(nonzero, descending=True, stable=True)
    xp = x.index_select(1, order)
    positions = torch.arange(1, x.shape[1] + 1, dtype=x.dtype)
    return order, (xp.ne(0) * positions).amax(1).to(torch.int64)


def test_pixel_order_and_extents_are_unchanged():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((300, 784), generator=gen)
    x[x < 0.8] = 0  # sparse, with many ties among the counts
    x[:, :40] = 0  # blank margins
    x[5] = 0  # a blank image: extent 0
    pixels = PixelOrder._compute(x)
    order, extent = reference_order(x)
    assert torch.equal(pixels.order, order) and torch.equal(pixels.extent, extent)
    assert torch.equal(pixels.x, x.index_select(1, order))
    assert torch.equal(pixels.inverse, torch.argsort(order))
