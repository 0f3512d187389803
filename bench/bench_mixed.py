"""Mixed-shape populations: K trials of search-like shapes, three ways.

Draws K shapes as studies/search.toml's space does (depth 1-4, widths 16-512 log-uniform;
momentum 0-0.99; dropout 0-0.6 after the first layer) and trains them as one Population
for --epochs epochs: each shape its own group, one after another ("apart"); on a GPU, the
same groups side by side in one CUDA graph ("side by side"); and padded into buckets
("buckets", Population(bucket=True)): per depth, width quantiles of about 16 members.
Prints each way's wall, trials/min and the useful arithmetic rate (6 x the members' own
parameters x images x epochs), and, where both ran, whether side by side is bit-identical
to apart; then the FLOPs the buckets pad and in how many stacks, against the earlier one
bucket per depth (--flops-only prints only that, training nothing).

Run: python bench/bench_mixed.py --device cuda --k 1 8 16 64 256 [--epochs 5]
"""

from __future__ import annotations

import argparse
import math
import random
import time

import torch

from mnist_search.config import TrainConfig, mlp_parameters
from mnist_search.training.population import BUCKET_MEMBERS, Population, buckets
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


def run(configs: list[TrainConfig], data, device: str, concurrent: bool, bucket: bool = False
        ) -> tuple[float, dict]:
    pop = Population[int](data, device, order_seed=0, bucket=bucket, concurrent=concurrent)
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


def flops(configs: list[TrainConfig], padded: bool = False) -> float:
    """6 x parameters x 50,000 images x epochs, of each model or of its bucket."""
    return sum(6 * mlp_parameters(c.trained_hidden if padded else c.hidden) * 50_000 * c.epochs
               for c in configs)


def padding(configs: list[TrainConfig]) -> str:
    """How buckets pad these configs' FLOPs, and in how many stacks: in quantiles of
    BUCKET_MEMBERS (today's buckets) and every member of a depth in one (the earlier ones)."""
    useful, out = flops(configs), []
    for name, members in (("quantile buckets", BUCKET_MEMBERS), ("one per depth", len(configs))):
        padded = buckets(configs, members=members)
        stacks = len({c.stack_key() for c in padded})
        out.append(f"{name} pad the FLOPs {flops(padded, padded=True) / useful:.2f}x "
                   f"in {stacks} stacks")
    return f"K={len(configs)}: " + "; ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 8, 16])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--max-apart", type=int, default=16,
                    help="largest K also trained one group after another (that is slow)")
    ap.add_argument("--ways", nargs="+", default=["apart", "buckets", "side by side"],
                    help="which ways to train [default: all that the device has]")
    ap.add_argument("--flops-only", action="store_true",
                    help="print how buckets pad each K's FLOPs, train nothing")
    args = ap.parse_args()
    if args.flops_only:
        for k in args.k:
            print(padding(shapes(k)))
        return
    device = resolve_device(args.device)
    data = load_for(TrainConfig(val_size=10000), device)
    cuda = device.startswith("cuda")
    modes = {"apart": (False, False), "buckets": (cuda, True)}
    if cuda:
        modes["side by side"] = (True, False)
    modes = {name: way for name, way in modes.items() if name in args.ways}
    for k in args.k:
        configs = [TrainConfig(**{**c.to_dict(), "epochs": args.epochs, "device": device,
                                  "val_size": 10000}) for c in shapes(k)]
        useful = flops(configs)
        parts, digests = [], {}
        for name, (concurrent, bucket) in modes.items():
            if name == "apart" and k > args.max_apart:
                continue
            wall, results = run(configs, data, device, concurrent, bucket)
            digests[name] = {key: r.weights_digest() for key, r in results.items()
                             if isinstance(r, TrainResult)}
            parts.append(f"{name} {wall:.2f} s ({60 * k / wall:.0f} trials/min, "
                         f"{useful / wall / 1e9:.0f} GFLOP/s)")
        line = f"K={k:4d}, {args.epochs} epochs on {device}: " + "; ".join(parts)
        line += f"; {padding(configs)}"
        if cuda and "apart" in digests:
            same = sum(digests["side by side"][key] == digests["apart"].get(key)
                       for key in digests["apart"])
            line += f"; side by side bit-identical to apart {same}/{k}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
