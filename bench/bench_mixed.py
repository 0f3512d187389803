"""Mixed-shape populations: K trials of search-like shapes trained side by side.

Draws K shapes as studies/search.toml's space does (depth 1-4, widths 16-512 log-uniform;
momentum 0-0.99; dropout 0-0.6 after the first layer), trains them as one Population for
--epochs epochs, and, on a GPU, once more with the groups one after another instead of
side by side in one CUDA graph, comparing walls and every member's weights digest. Prints
trials/min and the arithmetic rate (6 x parameters x images x epochs).

Run: python bench/bench_mixed.py --device cuda --k 1 8 16 64 [--epochs 5]
"""

from __future__ import annotations

import argparse
import math
import random
import time

import torch

from mnist_search.config import TrainConfig
from mnist_search.training import population as population_module
from mnist_search.training.population import Population
from mnist_search.training.train import TrainResult, load_for, resolve_device


def shapes(k: int, seed: int = 0) -> list[TrainConfig]:
    rng = random.Random(seed)
    out = []
    for i in range(k):
        depth = rng.randint(1, 4)
        hidden = tuple(round(math.exp(rng.uniform(math.log(16), math.log(512))))
                       for _ in range(depth))
        out.append(TrainConfig(hidden=hidden, momentum=rng.uniform(0, 0.99),
                               dropout=rng.uniform(0, 0.6), seed=i))
    return out


def run(configs: list[TrainConfig], data, device: str, concurrent: bool) -> tuple[float, dict]:
    population_module.CONCURRENT_GROUPS = concurrent
    pop = Population[int](data, device, order_seed=0)
    pop.add(list(enumerate(configs)))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    results: dict = {}
    while len(pop):
        results.update(pop.run_epoch())
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 8, 16])
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    device = resolve_device(args.device)
    data = load_for(TrainConfig(val_size=10000), device)
    modes = [True, False] if device.startswith("cuda") else [False]
    for k in args.k:
        configs = [TrainConfig(**{**c.to_dict(), "epochs": args.epochs, "device": device,
                                  "val_size": 10000}) for c in shapes(k)]
        flops = sum(6 * sum(a * b + b for a, b in zip((784, *c.hidden), (*c.hidden, 10),
                                                       strict=True)) * 50_000 * c.epochs
                    for c in configs)
        walls, digests = {}, {}
        for concurrent in modes:
            wall, results = run(configs, data, device, concurrent)
            walls[concurrent] = wall
            digests[concurrent] = {key: r.weights_digest() for key, r in results.items()
                                   if isinstance(r, TrainResult)}
        line = (f"K={k:4d} mixed shapes, {args.epochs} epochs: {walls[modes[0]]:.2f} s, "
                f"{60 * k / walls[modes[0]]:.0f} trials/min, "
                f"{flops / walls[modes[0]] / 1e9:.0f} GFLOP/s")
        if len(modes) == 2:
            same = sum(digests[True][key] == digests[False].get(key) for key in digests[True])
            line += (f"; groups one after another {walls[False]:.2f} s: side by side is "
                     f"{walls[False] / walls[True]:.2f}x; bit-identical {same}/{k}")
        print(line + f" on {device}")


if __name__ == "__main__":
    main()
