"""What asking the sampler for B trials at once costs a search: best value after N trials.

A worker as wide as its engine asks the sampler for as many trials as it has free slots
and tells them when they end; the sampler then proposes B trials knowing none of their
results (Optuna 5's TPE marks them with the constant liar). This bench runs the same study
file with ask-and-tell in batches of B: ask B, train each, tell all B, for N trials in all,
and prints the best value after each quarter of N, per B and seed. Training is the real
objective (search.Objective) with the file's values, `--epochs` and `--trials` aside; the
sampler is the file's, seeded per repeat, so each B sees the same seeds.

Run: python bench/bench_proposals.py --batches 1 8 64 --trials 64 --epochs 1 --seeds 0 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import optuna

import mnist_search as ms
from mnist_search.search.study import make_sampler


def search(spec: ms.StudySpec, objective: ms.Objective, batch: int, trials: int,
           seed: int) -> list[float]:
    """Best value after each trial of one batched search."""
    study = optuna.create_study(direction=spec.directions[0], pruner=optuna.pruners.NopPruner(),
                                sampler=make_sampler(spec, salt=seed))
    best: list[float] = []
    while len(study.trials) < trials:
        asked = [study.ask() for _ in range(min(batch, trials - len(study.trials)))]
        values = [objective(t) for t in asked]  # none told before all are proposed
        for trial, value in zip(asked, values, strict=True):
            study.tell(trial, value)
            best.append(max([v for v in [*best[-1:], value] if v == v] or [float("nan")]))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--study", default="studies/search.toml")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--trials", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = ms.load_spec(args.study)
    # No pruner here: every trial trains to the end, so batches differ only in what the
    # sampler knew when it proposed them.
    objective = ms.Objective(spec, device=args.device, epochs=args.epochs)
    marks = sorted({max(1, args.trials * q // 4) for q in (1, 2, 3, 4)})
    finals: dict[int, list[float]] = {}
    for batch in args.batches:
        for seed in args.seeds:
            start = time.perf_counter()
            best = search(spec, objective, batch, args.trials, seed)
            finals.setdefault(batch, []).append(best[-1])
            print(f"B={batch:4d} seed {seed}: best after " +
                  ", ".join(f"{n}: {best[n - 1]:.2f}" for n in marks) +
                  f" ({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"{spec.name}, {args.trials} trials of {args.epochs} epoch(s), best value (mean "
          "over seeds): " + "; ".join(f"B={b} {statistics.mean(v):.2f}"
                                      for b, v in finals.items()))


if __name__ == "__main__":
    main()
