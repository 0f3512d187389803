"""Bench A: one epoch of the notebook baseline, the notebook's loop vs mnist_search.training.train.

Run: .venv/bin/python bench/bench_train.py [--root data] [--threads N]
Both run in this one process, one after the other, with the same thread count.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebook_loop import notebook_epoch_seconds  # noqa: E402

from mnist_search.config import TrainConfig  # noqa: E402
from mnist_search.data import default_root, load_data  # noqa: E402
from mnist_search.training.train import train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", default=str(default_root()))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--momentum", type=float, default=0.9)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["MNIST_SEARCH_DATA"] = args.root

    nb_s, nb_acc = notebook_epoch_seconds(args.root, momentum=args.momentum)
    print(f"notebook loop : {nb_s:6.2f} s/epoch  test acc {nb_acc:.2f}%")

    t0 = time.perf_counter()
    load_data("mnist", args.root)
    load_s = time.perf_counter() - t0
    cfg = TrainConfig(momentum=args.momentum, epochs=1, device="cpu")
    result = train(cfg)
    ours = result.seconds
    print(f"mnist_search  : {ours:6.2f} s/epoch  test acc {result.test_accuracy:.2f}% "
          f"(data load {load_s:.2f} s, once per process)")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"bench A: notebook {nb_s:.2f} s/epoch, mnist_search {ours:.2f} s/epoch, "
          f"ratio {nb_s / ours:.1f}x (target >= 6x), threads {args.threads}, "
          f"peak RSS {rss_mb:.0f} MB, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}")


if __name__ == "__main__":
    main()
