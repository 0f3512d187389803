"""Bench B: the whole notebook grid end to end, against the notebook's own loop.

Runs `mnist-search run studies/notebook.toml --workers 2` into a fresh SQLite file and
times it from command start to exit. The notebook's loop is timed for one baseline epoch
in the same run; its 15 runs x 5 epochs are estimated from that (316 s measured at 4.1 s
per baseline epoch, scaled by this machine's epoch time).

These vCPUs are shared and noisy (the same run moves by 15-30%), so --repeat N runs the grid
N times and reports the fastest and the median wall as well as each run.

Run: .venv/bin/python bench/bench_notebook_grid.py [--workers 2] [--device cpu] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
from before import REPO, checkout, cli, env  # noqa: E402
from notebook_loop import notebook_epoch_seconds  # noqa: E402

NOTEBOOK = {0.0: 91.44, 0.2: 91.58, 0.4: 93.01, 0.6: 94.04, 0.8: 96.14, 0.9: 97.45}
GRID_S_AT_REFERENCE, REFERENCE_EPOCH_S = 316.0, 4.1  # the measurement of the grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--root", default=os.environ.get("MNIST_SEARCH_DATA", "data"))
    ap.add_argument("--repeat", type=int, default=1, help="run the grid N times")
    ap.add_argument("--before", default=None,
                    help="also run the grid with this commit's code, alternating, first")
    args = ap.parse_args()
    if args.before:
        with checkout(args.before) as tree:
            before, after = [], []
            for _ in range(max(1, args.repeat)):
                before.append(_grid(args, tree)[0])
                after.append(_grid(args, None)[0])
        print(f"bench B before/after: {args.before} {statistics.median(before):.1f} s "
              f"[{', '.join(f'{w:.1f}' for w in before)}], this checkout "
              f"{statistics.median(after):.1f} s [{', '.join(f'{w:.1f}' for w in after)}]: "
              f"{statistics.median(before) / statistics.median(after):.2f}x")
        return

    nb_epoch, _ = notebook_epoch_seconds(args.root)
    nb_grid = GRID_S_AT_REFERENCE * nb_epoch / REFERENCE_EPOCH_S
    walls = []
    for _ in range(max(1, args.repeat)):
        wall, trials = _grid(args)
        walls.append(wall)
        print(f"  run {len(walls)}: {wall:.1f} s wall")
    wall = statistics.median(walls)
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    deltas = []
    for t in sorted(trials, key=lambda t: t.number):
        label = t.user_attrs["label"]
        a = t.user_attrs
        line = f"  {label:20} {t.value:6.2f}%  {a['stack_seconds']:6.1f} s (stack of " \
            f"{a['population_size']})"
        if label.startswith("sweep-momentum-"):
            ref = NOTEBOOK[float(label.rsplit("-", 1)[1])]
            deltas.append(t.value - ref)
            line += f"  notebook {ref:.2f}%"
        print(line)
    print(f"notebook loop: {nb_epoch:.2f} s per baseline epoch here -> grid ~{nb_grid:.0f} s")
    runs = "" if len(walls) == 1 else f" (median of {len(walls)}; fastest {min(walls):.1f} s)"
    print(f"bench B: notebook grid (15 runs x 5 epochs, all 60,000 images) in {wall:.1f} s "
          f"wall{runs} with {args.workers} workers on {args.device}, vs ~{nb_grid:.0f} s for "
          f"the notebook loop: {nb_grid / wall:.1f}x (target >= 10x, <= 30 s); momentum sweep "
          f"within {max(abs(d) for d in deltas):.2f} pp of the notebook; peak worker RSS "
          f"{rss_mb:.0f} MB; {os.cpu_count()} cores")


def _grid(args: argparse.Namespace, tree: Path | None = None) -> tuple[float, list]:
    """One run of the grid (with `tree`'s code, if given) into a fresh SQLite file: (wall
    seconds, its trials)."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        start = time.perf_counter()
        subprocess.run([*cli(tree), "-q", "run",
                        str((tree or REPO) / "studies" / "notebook.toml"), "--storage", url,
                        "--workers", str(args.workers), "--device", args.device],
                       check=True, env={**env(tree), "MNIST_SEARCH_DATA": args.root})
        wall = time.perf_counter() - start
        return wall, optuna.load_study(study_name="notebook", storage=url).get_trials()


if __name__ == "__main__":
    main()
