"""A study's rate: trials and epochs finished per minute by `mnist-search run STUDY` in a
time budget, on a fresh SQLite storage.

Trials count when they finished by training (complete or pruned): those the budget cut
short are failed and left out. The rate is taken over the trials' own span (first start to
last finish), so the command's start-up is left out; the wall is printed beside it.
Hyperband studies (best-mlp) prune most trials early, so epochs per minute is printed too.

Run: python bench/bench_rate.py [--study best-mlp] [--timeout 60] [--device cuda]
     [--workers N] [--storage URL]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from mnist_search.spec import load_spec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from before import cli, env  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--study", default="best-mlp")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--storage", default=None, help="[default: a temporary SQLite file]")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.storage or f"sqlite:///{tmp}/rate.db"
        workers = [] if args.workers is None else ["--workers", str(args.workers)]
        start = time.perf_counter()
        proc = subprocess.run([*cli(None), "-q", "run", args.study, "--storage", url,
                               "--device", args.device, "--timeout", str(args.timeout),
                               *workers], env=env(None))
        wall = time.perf_counter() - start
        if proc.returncode not in (0, 3):  # 3: stopped by --timeout, as asked
            sys.exit(f"run failed with exit code {proc.returncode}")
        study = optuna.load_study(study_name=load_spec(args.study).name, storage=url)
        # finished by training (complete or pruned), not cut by the budget (failed)
        done = [t for t in study.get_trials(deepcopy=False)
                if t.state.name in ("COMPLETE", "PRUNED")
                and t.datetime_start and t.datetime_complete]
    if not done:
        sys.exit(f"{args.study}: no trial finished in {args.timeout:.0f} s")
    first = min(t.datetime_start for t in done if t.datetime_start)
    last = max(t.datetime_complete for t in done if t.datetime_complete)
    minutes = max(1e-9, (last - first).total_seconds() / 60)
    pruned = sum(t.state.name == "PRUNED" for t in done)
    epochs = sum(len(t.intermediate_values) for t in done)
    print(f"{args.study} on {args.device}: {len(done)} trials finished ({pruned} pruned) in "
          f"{minutes:.2f} min of trials ({wall:.1f} s wall): {len(done) / minutes:.1f} "
          f"trials/min, {epochs / minutes:.0f} epochs/min")


if __name__ == "__main__":
    main()
