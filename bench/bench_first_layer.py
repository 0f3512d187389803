"""The first layer of K members of one depth and mixed widths: padded to the widest, as a
bucket trains it today, against one exact matmul over their concatenated widths (issue
§4's plan), in one run. Forward and the weight gradient's GEMM of one batch, the way the
engine fuses them ([B, 784] x [784, columns]).

- padded: every member as wide as the widest, the padding computed (today's buckets);
- gathered: padded storage, the real columns gathered out and scattered back every step;
- concatenated: the members' real columns stored side by side (unpadded), the activations
  scattered into the later layers' padded [B, K*widest];
- its GEMMs alone: concatenated without the scatter and gather, the bound for a layout
  whose later layers read the concatenated activations directly;
- separate: each member its own [784, width] GEMMs, as a CPU trains distinct shapes today
  (each a group of its own, one after another).

Prints ms per batch for each and the ratios against padded. The FLOPs padded is K*widest /
sum(widths). A layout only pays if its storage is unpadded: gathering per step costs more
memory traffic than the padding's FLOPs.

Run: python bench/bench_first_layer.py [--members 16] [--batch 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

import torch


def timed(step: Callable[[], None], repeat: int) -> float:
    step()  # warm-up: the first call allocates
    start = time.perf_counter()
    for _ in range(repeat):
        step()
    return (time.perf_counter() - start) / repeat * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    widths = [rng.choice(range(16, 513, 16)) for _ in range(args.members)]  # search.toml's
    widest, real, k, b = max(widths), sum(widths), 784, args.batch
    cols = torch.cat([torch.arange(i * widest, i * widest + w) for i, w in enumerate(widths)])
    x, g = torch.randn(b, k), torch.randn(b, args.members * widest)
    w_pad, v_pad = torch.randn(k, args.members * widest), torch.zeros(k, args.members * widest)
    w_cat, v_cat = torch.randn(k, real), torch.zeros(k, real)
    bias_pad, bias_cat = torch.zeros(args.members * widest), torch.zeros(real)

    def padded() -> None:
        torch.addmm(bias_pad, x, w_pad)
        v_pad.addmm_(x.t(), g, beta=0.9)

    def gathered() -> None:
        h = torch.zeros(b, args.members * widest)
        h.index_copy_(1, cols, torch.addmm(bias_pad[cols], x, w_pad.index_select(1, cols)))
        v_pad.mul_(0.9).index_add_(1, cols, torch.mm(x.t(), g.index_select(1, cols)))

    def concatenated() -> None:
        h = torch.zeros(b, args.members * widest)
        h.index_copy_(1, cols, torch.addmm(bias_cat, x, w_cat))
        v_cat.addmm_(x.t(), g.index_select(1, cols), beta=0.9)

    w_own = [torch.randn(k, w) for w in widths]
    v_own, b_own = [torch.zeros(k, w) for w in widths], [torch.zeros(w) for w in widths]
    g_own = [torch.randn(b, w) for w in widths]

    g_cat = torch.randn(b, real)

    def gemms_alone() -> None:
        torch.addmm(bias_cat, x, w_cat)
        v_cat.addmm_(x.t(), g_cat, beta=0.9)

    def separate() -> None:
        for w, v, bias, grad in zip(w_own, v_own, b_own, g_own, strict=True):
            torch.addmm(bias, x, w)
            v.addmm_(x.t(), grad, beta=0.9)

    ms = {f.__name__: timed(f, args.repeat) for f in (padded, gathered, concatenated,
                                                       gemms_alone, separate)}
    print(f"K={args.members} widths {widths}: FLOPs padded {args.members * widest / real:.2f}x; "
          f"batch {b}, {args.threads} thread(s)")
    print("; ".join(f"{name} {t:.1f} ms ({ms['padded'] / t:.2f}x)" for name, t in ms.items()))
    print(f"against separate: concatenated {ms['separate'] / ms['concatenated']:.2f}x, "
          f"its GEMMs alone {ms['separate'] / ms['gemms_alone']:.2f}x")


if __name__ == "__main__":
    main()
