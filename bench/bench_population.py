"""Population bench: K baseline models (784-128-64-10, 5 epochs) trained as one stack.

Prints model-epochs per second and baseline 5-epoch trials per minute for each K, so the
gain from stacking is measured in one run on one device.

Run: .venv/bin/python bench/bench_population.py --device cuda --k 1 8 64 256
"""

from __future__ import annotations

import argparse
import time

import torch

from mnist_search.config import TrainConfig
from mnist_search.training.train import load_for, resolve_device, train_population


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    device = resolve_device(args.device)
    base = TrainConfig(momentum=0.9, epochs=args.epochs, device=device)
    data = load_for(base, device)
    rows = []
    for k in args.k:
        configs = [TrainConfig(momentum=0.5 + 0.4 * i / max(1, k - 1), seed=i, order_seed=0,
                               epochs=args.epochs, device=device) for i in range(k)]
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        results = train_population(configs, data)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
        accs = [r.test_accuracy for r in results if not isinstance(r, BaseException)]
        per_min = 60 * k / wall * args.epochs / 5
        rows.append((k, per_min))
        print(f"K={k:4d}: {wall:7.2f} s, {k * args.epochs / wall:7.1f} model-epochs/s, "
              f"{per_min:8.1f} baseline 5-epoch trials/min, test acc {min(accs):.2f}.."
              f"{max(accs):.2f}%")
    best = max(rows, key=lambda r: r[1])
    print(f"bench population: best {best[1]:.0f} baseline trials/min at K={best[0]} "
          f"({best[1] / rows[0][1]:.1f}x K={rows[0][0]}) on {device}")


if __name__ == "__main__":
    main()
