"""Answers with their noise, timed: the L2 question with seeds, confirm, and the notebook with
replicates, each one command from start to exit on real MNIST.

1. "Which L2 strength on fc2 is best?": a grid over ten lambdas (0 to 0.1) of the notebook's
   baseline (784-128-64-10, SGD lr 0.01, batch 64, 5 epochs) with `replicates = 3`, 30 trials
   (target: at most 90 s on 2 cores); then `show --by-config` (10 rows of n = 3, with
   intervals) and the report's L2 section, printed as written.
2. The same grid with one run per point, then `confirm --top 10 --seeds 3` (target: at most
   120 s).
3. The notebook study with `--replicates 3` against the single-run notebook grid, one run each
   (target: at most 3x).

Run: .venv/bin/python bench/bench_answers.py [--workers 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from before import REPO, cli, env  # noqa: E402

L2 = [0.0, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
STUDY = """
description = "Which L2 strength on fc2 is best for the notebook's baseline MLP?"
direction = "maximize"
objective = "test_accuracy"
seed = 0
replicates = {replicates}

[sampler]
kind = "grid"

[fixed]
dataset = "mnist"
hidden = [128, 64]
lr = 0.01
batch_size = 64
epochs = 5
penalty_layer = 2

[search]
l2 = {values}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--root", default=os.environ.get("MNIST_SEARCH_DATA", "data"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        _l2_question(args, Path(tmp), url)
        _confirm(args, Path(tmp), url)
        _notebook(args, url)
    print(f"machine: {os.cpu_count()} cores, device {args.device}, {args.workers} workers")


def _l2_question(args: argparse.Namespace, tmp: Path, url: str) -> None:
    wall = _timed(args, "run", _study(tmp, "l2", 3), "--storage", url,
                  "--workers", str(args.workers), "--device", args.device)
    shown = json.loads(_cli(args, "show", "l2", "--storage", url, "--by-config",
                            "--format", "json"))
    rows = shown["configs"]
    full = sum(r["n"] == 3 and r["ci95"] is not None for r in rows)
    print(f"1. L2 question, 10 lambdas x 3 seeds: {wall:.1f} s start to exit (target <= 90 s)"
          f"; show --by-config: {len(rows)} rows, {full} with n = 3 and an interval")
    print(f"   verdict: {shown['verdict']}")
    out = tmp / "report"
    _cli(args, "report", "l2", "--storage", url, "-o", str(out), "--format", "md")
    text = (out / "report.md").read_text()
    section = text.split("## ")
    l2 = next((s for s in section if s.lower().startswith(("l2", "l1 vs l2", "penalty"))), "")
    print("   report's L2 section: " + " ".join(l2.splitlines()[1:]).strip()[:900])


def _confirm(args: argparse.Namespace, tmp: Path, url: str) -> None:
    _timed(args, "run", _study(tmp, "l2single", 1), "--storage", url,
           "--workers", str(args.workers), "--device", args.device)
    wall = _timed(args, "confirm", "l2single", "--top", "10", "--seeds", "3", "--storage", url,
                  "--workers", str(args.workers), "--device", args.device)
    print(f"2. confirm --top 10 --seeds 3 on the single-run grid: {wall:.1f} s "
          f"(target <= 120 s)")


def _notebook(args: argparse.Namespace, url: str) -> None:
    notebook = str(REPO / "studies" / "notebook.toml")
    single = _timed(args, "run", notebook, "--storage", url.replace("bench.db", "nb1.db"),
                    "--workers", str(args.workers), "--device", args.device)
    triple = _timed(args, "run", notebook, "--storage", url.replace("bench.db", "nb3.db"),
                    "--workers", str(args.workers), "--device", args.device,
                    "--replicates", "3")
    print(f"3. notebook study: {single:.1f} s with one run per label, {triple:.1f} s with "
          f"--replicates 3: {triple / single:.2f}x (target <= 3x)")


def _study(tmp: Path, name: str, replicates: int) -> str:
    path = tmp / f"{name}.toml"
    path.write_text(STUDY.format(replicates=replicates, values=json.dumps(L2)))
    return str(path)


def _timed(args: argparse.Namespace, *argv: str) -> float:
    start = time.perf_counter()
    _cli(args, *argv)
    return time.perf_counter() - start


def _cli(args: argparse.Namespace, *argv: str) -> str:
    done = subprocess.run([*cli(None), "-q", *argv], check=True, capture_output=True,
                          text=True, env={**env(None), "MNIST_SEARCH_DATA": args.root})
    return done.stdout


if __name__ == "__main__":
    main()
