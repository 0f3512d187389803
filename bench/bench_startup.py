"""Start-up: how long `mnist-search run notebook --workers 2` takes from the command's start
to its first training step, and where the time goes.

Each repeat runs the notebook study on a fresh SQLite storage with `-v`, reads the workers'
debug line "start-up (s since the command started): ..." (the phases: module loaded,
imports, data on the device, pixel order, orders, study opened, first epoch), notes when
the first worker reached its first epoch as seen from here (the command's start counted
from before the interpreter starts), then stops the run with Ctrl-C (a clean stop). With
--before REV the same is run with that commit's code, alternately, in the same run.

Run: python bench/bench_startup.py [--repeat 5] [--study notebook] [--before REV]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from before import checkout, cli, env  # noqa: E402

LINE = "start-up (s since the command started): "


def once(tree: Path | None, study: str, tmp: Path) -> tuple[float, str]:
    """(seconds from the command's start to the first worker's first epoch, its phases)."""
    db = tmp / f"s{time.monotonic_ns()}.db"
    start = time.perf_counter()
    proc = subprocess.Popen([*cli(tree), "-v", "run", study, "--storage", f"sqlite:///{db}",
                             "--workers", "2"], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=env(tree), cwd=tmp)
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if LINE in line:
                return time.perf_counter() - start, line.split(LINE, 1)[1].strip()
        raise SystemExit(f"no start-up line: the run exited {proc.wait()}")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--study", default="notebook")
    ap.add_argument("--before", default=None, help="also run this git revision's code")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name, \
            (checkout(args.before) if args.before else contextlib.nullcontext()) as old:
        trees = [("this tree", None)] + ([(args.before, old)] if old is not None else [])
        times: dict[str, list[float]] = {label: [] for label, _ in trees}
        print(f"start-up of `run {args.study} --workers 2`, {os.cpu_count()} CPUs:")
        for _ in range(args.repeat):
            for label, tree in trees:
                seconds, phases = once(tree, args.study, Path(tmp_name))
                times[label].append(seconds)
                short = re.sub(r"(\d+\.\d\d)", r"\1s", phases)
                print(f"  {label:<10} first epoch at {seconds:5.2f} s; a worker's phases: {short}")
        for label, values in times.items():
            print(f"{label}: first epoch {statistics.median(values):.2f} s after the command "
                  f"started (median of {len(values)}; {min(values):.2f}-{max(values):.2f})")


if __name__ == "__main__":
    main()
