"""Do CUDA graphs pay for the training step, and do they change any number? (CUDA only.)

Trains populations of K baseline-shaped models (SGD, momentum 0.5-0.9; with --dropout,
every other member drops half its first hidden layer) for --epochs epochs with the step
captured as a CUDA graph and with the eager step, and compares walls and the weights
digests of every member.

Run: python bench/bench_cuda_graphs.py --k 1 11 64 1024 [--dropout] [--epochs 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from mnist_search.config import TrainConfig
from mnist_search.training.train import TrainResult, load_for, train_population


def _run(configs: list[TrainConfig], data, use_graphs: bool) -> tuple[float, list[str]]:
    torch.cuda.synchronize()
    start = time.perf_counter()
    results = train_population(configs, data, use_graphs=use_graphs)
    torch.cuda.synchronize()
    wall = time.perf_counter() - start
    return wall, [r.weights_digest() if isinstance(r, TrainResult) else repr(r)
                  for r in results]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--k", type=int, nargs="+", default=[1, 11, 64, 1024])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--dropout", action="store_true")
    args = ap.parse_args()
    data = load_for(TrainConfig(device="cuda"), "cuda")
    _run([TrainConfig(epochs=1, device="cuda")], data, True)  # warm-up: CUDA, cuBLAS
    for k in args.k:
        configs = [TrainConfig(momentum=0.5 + 0.4 * i / max(1, k - 1), seed=i, order_seed=0,
                               dropout=0.5 if args.dropout and i % 2 else 0.0,
                               epochs=args.epochs, device="cuda") for i in range(k)]
        eager, eager_digests = _run(configs, data, False)
        graphed, graph_digests = _run(configs, data, True)
        same = sum(a == b for a, b in zip(eager_digests, graph_digests, strict=True))
        print(f"K={k:5d}{' dropout' if args.dropout else ''}: eager {eager / args.epochs:.3f} "
              f"s/epoch, CUDA graph {graphed / args.epochs:.3f} s/epoch: "
              f"{eager / graphed:.2f}x; bit-identical weights {same}/{k}")


if __name__ == "__main__":
    main()
