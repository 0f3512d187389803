"""TF32 against full fp32: the notebook grid's accuracy and a best-mlp trial's speed.

1. Accuracy: each of the notebook's 15 reference configs, with --replicates seeds, trained
   with matmul_precision "highest" and "tf32" (the same seed, so the same init and batch
   order: each pair differs only in the matmuls' rounding). Prints the mean change in test
   accuracy (tf32 minus fp32) over every pair with its standard error, and each config's
   mean change. Issue 24's bound: at most 0.1 percentage points.
2. Speed: best-mlp's reference (2 x 1024, Adam, cosine, dropout and input dropout, batch
   128) for --epochs-speed epochs, both precisions alternately, --repeat times: the seconds
   per epoch after the first (which holds the warm-up) and the ratio.

On a CPU TF32 does nothing (a CPU matmul is full fp32 either way): every change is 0 and
the ratio about 1, which is what a run there checks. The figures are a GPU's.

Run: python bench/bench_tf32.py [--device cuda] [--replicates 3] [--epochs 5]
     [--epochs-speed 3] [--repeat 2] [--labels baseline deep ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time
from collections import defaultdict

from mnist_search.config import MatmulPrecision, TrainConfig
from mnist_search.data import Data
from mnist_search.spec import load_spec
from mnist_search.training.epochs import TrainResult
from mnist_search.training.train import load_for, resolve_device, train_population

PRECISIONS: tuple[MatmulPrecision, ...] = ("highest", "tf32")


def grid_configs(labels: list[str] | None, epochs: int | None) -> dict[str, TrainConfig]:
    spec = load_spec("notebook")
    out = {}
    for ref in spec.references:
        if labels and ref.label not in labels:
            continue
        config = spec.base_config(**ref.values)
        out[ref.label] = config if epochs is None else dataclasses.replace(config, epochs=epochs)
    return out


def accuracy(args: argparse.Namespace, device: str) -> None:
    configs = grid_configs(args.labels, args.epochs)
    data = load_for(next(iter(configs.values())), device)
    changes: dict[str, list[float]] = defaultdict(list)
    for label, config in configs.items():
        got: dict[str, list[float]] = {}
        for precision in PRECISIONS:  # one stack per precision: the seeds train together
            members = [dataclasses.replace(config, seed=seed, device=device,
                                           matmul_precision=precision)
                       for seed in range(args.replicates)]
            outcomes = train_population(members, data)
            got[precision] = [o.test_accuracy if isinstance(o, TrainResult) else math.nan
                              for o in outcomes]
        changes[label] = [t - h for h, t in zip(got["highest"], got["tf32"], strict=True)]
        mean = {p: statistics.fmean(got[p]) for p in PRECISIONS}
        print(f"  {label:<20} fp32 {mean['highest']:6.2f}%  tf32 {mean['tf32']:6.2f}%  "
              f"change {statistics.fmean(changes[label]):+.3f} pp", flush=True)
    every = [c for cs in changes.values() for c in cs]
    err = statistics.stdev(every) / math.sqrt(len(every)) if len(every) > 1 else math.nan
    print(f"accuracy: mean change tf32 - fp32 over {len(every)} pairs "
          f"({len(configs)} configs x {args.replicates} seeds, {args.epochs or 'their'} "
          f"epochs): {statistics.fmean(every):+.3f} pp (standard error {err:.3f}); "
          f"largest config mean {max(abs(statistics.fmean(c)) for c in changes.values()):.3f} "
          "pp; bound 0.1 pp")


def epoch_seconds(config: TrainConfig, data: Data) -> list[float]:
    marks = [time.perf_counter()]
    train_population([config], data, lambda _i, _rep: marks.append(time.perf_counter()))
    return [b - a for a, b in zip(marks, marks[1:], strict=False)]


def speed(args: argparse.Namespace, device: str) -> None:
    spec = load_spec("best-mlp")
    ref = spec.references[0]
    base = spec.base_config(**ref.values)
    base = dataclasses.replace(base, epochs=args.epochs_speed, device=device)
    data = load_for(base, device)
    per_epoch: dict[str, list[float]] = defaultdict(list)
    for _ in range(args.repeat):
        for precision in PRECISIONS:
            seconds = epoch_seconds(dataclasses.replace(base, matmul_precision=precision), data)
            per_epoch[precision] += seconds[1:] or seconds
    fp32, tf32 = (statistics.median(per_epoch[p]) for p in PRECISIONS)
    print(f"speed: best-mlp's {ref.label} ({base.optimizer}, {base.schedule}, batch "
          f"{base.batch_size}), median s/epoch after the first, {args.repeat} runs each: "
          f"fp32 {fp32:.3f} s, tf32 {tf32:.3f} s, {fp32 / tf32:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--replicates", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None,
                    help="epochs per grid config [default: the notebook's]")
    ap.add_argument("--labels", nargs="*", default=None, help="only these grid labels")
    ap.add_argument("--epochs-speed", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--skip", choices=("accuracy", "speed"), default=None)
    args = ap.parse_args()
    device = resolve_device(args.device)
    print(f"TF32 against fp32 on {device}")
    if args.skip != "accuracy":
        accuracy(args, device)
    if args.skip != "speed":
        speed(args, device)


if __name__ == "__main__":
    main()
