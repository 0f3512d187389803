"""Bench C: search throughput of a TPE study over the joint space (2 workers, 5 epochs).

Runs studies/search.toml (depth, width, dropout, L1/L2 lambda, momentum; median pruning)
for a fixed time into a fresh SQLite file and counts finished trials, plus
"baseline-sized" trials: the work done, in units of one 784-128-64-10 5-epoch trial
(parameters x epochs trained, pruned trials counted for the epochs they ran).

Run: .venv/bin/python bench/bench_search.py [--seconds 60] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parent.parent
BASELINE = (784 * 128 + 128) + (128 * 64 + 64) + (64 * 10 + 10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/search.db"
        start = time.perf_counter()
        proc = subprocess.run([str(Path(sys.executable).with_name("mnist-search")), "-q", "run",
                               str(REPO / "studies" / "search.toml"), "--storage", url,
                               "--workers", str(args.workers), "--device", args.device,
                               "--trials", "100000", "--timeout", str(args.seconds)])
        wall = time.perf_counter() - start
        if proc.returncode not in (0, 3):  # 3: stopped by the timeout with trials left
            sys.exit(f"run failed with exit code {proc.returncode}")
        trials = optuna.load_study(study_name="search", storage=url).get_trials()
        models = [p for p in Path(f"{tmp}/search.db.artifacts").glob("*") if p.is_file()]
        model_mb = sum(p.stat().st_size for p in models) / 1e6
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    units = sum(t.user_attrs.get("parameters", BASELINE) * len(t.intermediate_values)
                for t in finished) / (BASELINE * 5)
    best = max((t.value for t in trials if t.state.name == "COMPLETE"), default=float("nan"))
    pruned = sum(t.state.name == "PRUNED" for t in trials)
    print(f"bench C: {len(finished)} trials finished ({pruned} pruned) in {wall:.0f} s with "
          f"{args.workers} workers = {60 * len(finished) / wall:.1f} trials/min, "
          f"{60 * units / wall:.1f} baseline-sized 5-epoch trials/min; best val accuracy "
          f"{best:.2f}%; wall {wall:.1f} s for --timeout {args.seconds:g} (start-up "
          f"included); models {100 * model_mb / max(1, len(models)):.0f} MB per 100 trials; "
          f"{os.cpu_count()} cores, {args.device}")


if __name__ == "__main__":
    main()
