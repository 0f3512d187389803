"""torch.compile on the training step: does it pay, compile time included?

Trains K stacked baseline models for one epoch eagerly, then compiles Stack.step and trains
the same epoch again twice (the first compiled epoch pays for compiling, including the
recompile for the epoch's short last batch). Prints one line per K and a summary line.

Run: .venv/bin/python bench/bench_compile.py [--device cpu] [--k 1 8] [--mode default]
"""

from __future__ import annotations

import argparse
import time

import torch

from mnist_search.config import TrainConfig
from mnist_search.data import epoch_order
from mnist_search.training.engine import Stack
from mnist_search.training.train import load_for, resolve_device


def _epoch(stack: Stack, data, perm: torch.Tensor, k: int, device: str) -> float:
    start = time.perf_counter()
    stack.run_epoch(data.train, [perm] * k, 64)  # ends in .tolist(): synchronised
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--mode", default="default", help="torch.compile mode")
    args = ap.parse_args()
    device = resolve_device(args.device)
    data = load_for(TrainConfig(device=device), device)
    perm = epoch_order(len(data.train), torch.Generator().manual_seed(0))
    rows = []
    for k in args.k:
        configs = [TrainConfig(momentum=0.9, seed=i, order_seed=0, device=device)
                   for i in range(k)]
        stack = Stack(configs, device)
        _epoch(stack, data, perm, k, device)  # warm-up: allocator, caches
        eager = _epoch(stack, data, perm, k, device)
        stack.step = torch.compile(stack.step, mode=args.mode)
        first = _epoch(stack, data, perm, k, device)
        compiled = _epoch(stack, data, perm, k, device)
        rows.append((k, eager, first, compiled))
        print(f"K={k:4d}: eager {eager:.2f} s/epoch; compiled: first epoch {first:.2f} s "
              f"(compiling), then {compiled:.2f} s/epoch: {eager / compiled:.2f}x")
        torch._dynamo.reset()
    worst = min(r[1] / r[3] for r in rows)
    best = max(r[1] / r[3] for r in rows)
    epochs_to_repay = [(r[2] - r[3]) / max(1e-9, r[1] - r[3]) for r in rows if r[1] > r[3]]
    repay = f"; compiling is repaid after {min(epochs_to_repay):.0f} epochs at best" \
        if epochs_to_repay else "; never repaid"
    print(f"bench compile: torch.compile ({args.mode}) on {device}: {worst:.2f}x to "
          f"{best:.2f}x per epoch for K={args.k}{repay}")


if __name__ == "__main__":
    main()
