"""Optimizers: what an epoch costs with each, and what giving them separate stacks costs.

1. One epoch of the notebook baseline (784-128-64-10, batch 64, one thread as a worker has)
   with SGD, Adam, AdamW and RMSprop.
2. Four Adam and four SGD baseline members, which the stack key trains as two stacks of 4,
   against what one mixed stack of 8 would cost: the GEMMs of a stack of 8 and each
   member's own update, estimated as the mean of a stack of 8 SGD and a stack of 8 Adam
   members (mixing is not implemented; this bounds what it could save).

Run: .venv/bin/python bench/bench_optimizers.py [--threads 1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from mnist_search.config import TrainConfig
from mnist_search.training.train import load_for, train_population


def timed(configs: list[TrainConfig], data: object, repeat: int) -> float:
    """Median wall seconds of training these configs, stack by stack."""
    keys: dict[tuple[object, ...], list[TrainConfig]] = {}
    for c in configs:
        keys.setdefault(c.stack_key(), []).append(c)
    walls = []
    for _ in range(repeat):
        start = time.perf_counter()
        for group in keys.values():
            train_population(group, data)  # type: ignore[arg-type]
        walls.append(time.perf_counter() - start)
    return statistics.median(walls)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = TrainConfig(epochs=1, device="cpu")
    data = load_for(base, "cpu")
    one = {o: timed([TrainConfig(epochs=1, device="cpu", optimizer=o, lr=0.001)], data,
                    args.repeat) for o in ("sgd", "adam", "adamw", "rmsprop")}
    def stack(opt: str, seeds: range) -> list[TrainConfig]:
        return [TrainConfig(epochs=1, device="cpu", seed=s, order_seed=1, optimizer=opt,
                            lr=0.001 if opt != "sgd" else 0.01) for s in seeds]

    sgd8, adam8 = timed(stack("sgd", range(8)), data, args.repeat), \
        timed(stack("adam", range(8)), data, args.repeat)
    apart = timed(stack("adam", range(4)) + stack("sgd", range(4, 8)), data, args.repeat)
    mixed = (sgd8 + adam8) / 2
    print("  " + ", ".join(f"{o} {s:.2f} s" for o, s in one.items()))
    print(f"bench optimizers: one baseline epoch, {args.threads} thread(s): SGD "
          f"{one['sgd']:.2f} s, Adam {one['adam']:.2f} s ({one['adam'] / one['sgd']:.2f}x), "
          f"AdamW {one['adamw']:.2f} s, RMSprop {one['rmsprop']:.2f} s; 4 Adam + 4 SGD "
          f"members as two stacks {apart:.2f} s vs ~{mixed:.2f} s for one mixed stack of 8 "
          f"(8 SGD {sgd8:.2f} s, 8 Adam {adam8:.2f} s): mixing would save "
          f"{100 * (1 - mixed / apart):.0f}%; {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
