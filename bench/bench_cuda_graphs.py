"""Do CUDA graphs pay for the training step? (CUDA only.)

For K stacked baseline models, times one epoch of the eager step, then captures one step
(batch gather included, from a static index buffer) as a CUDA graph and times the same
epoch replaying it. A second stack starting from the same weights checks that replaying
gives the eager step's numbers (max abs difference after 50 steps).

Run: python bench/bench_cuda_graphs.py --k 1 64 1024
"""

from __future__ import annotations

import argparse
import time

import torch

from mnist_search.config import TrainConfig
from mnist_search.data import epoch_order
from mnist_search.training.engine import Stack
from mnist_search.training.train import load_for

BATCH = 64


def _eager_epoch(stack: Stack, data, perm: torch.Tensor, k: int) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    stack.run_epoch(data.train, [perm] * k, BATCH)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def _graphed(stack: Stack, data, k: int, idx: torch.Tensor):
    def body() -> torch.Tensor:
        x = data.train.x.index_select(0, idx)
        y = data.train.y.index_select(0, idx).expand(k, -1)
        return stack.step(x, y)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            body()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()
    return graph


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--k", type=int, nargs="+", default=[1, 64, 1024])
    args = ap.parse_args()
    device = "cuda"
    data = load_for(TrainConfig(device=device), device)
    perm = epoch_order(len(data.train), torch.Generator().manual_seed(0)).to(device)
    full = len(data.train) // BATCH * BATCH
    for k in args.k:
        configs = [TrainConfig(momentum=0.9, seed=i, order_seed=0, device=device)
                   for i in range(k)]
        eager_stack, graph_stack = Stack(configs, device), Stack(configs, device)
        _eager_epoch(eager_stack, data, perm, k)  # warm-up
        eager = _eager_epoch(eager_stack, data, perm, k)
        idx = perm[:BATCH].clone()
        graph = _graphed(graph_stack, data, k, idx)
        eager_stack.flat.copy_(graph_stack.flat)
        eager_stack.buf.copy_(graph_stack.buf)
        for i in range(0, 50 * BATCH, BATCH):  # same 50 batches, eager and replayed
            b = perm[i:i + BATCH]
            eager_stack.step(data.train.x.index_select(0, b),
                             data.train.y.index_select(0, b).expand(k, -1))
            idx.copy_(b)
            graph.replay()
        diff = (eager_stack.flat - graph_stack.flat).abs().max().item()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, full, BATCH):
            idx.copy_(perm[i:i + BATCH])
            graph.replay()
        torch.cuda.synchronize()
        replay = (time.perf_counter() - start) * len(data.train) / full
        print(f"K={k:5d}: eager {eager:.3f} s/epoch, CUDA graph {replay:.3f} s/epoch: "
              f"{eager / replay:.2f}x; max |eager - graph| after 50 steps {diff:.2e}")


if __name__ == "__main__":
    main()
