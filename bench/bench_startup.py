"""Start-up: how long `mnist-search run notebook --workers 2` takes from the command's start
to its first training step, and where the time goes.

Each repeat runs the notebook study on a fresh SQLite storage with `-v`, reads the workers'
debug line "start-up (s since the command started): ..." (the phases: module loaded,
imports, data on the device, pixel order, orders, study opened, first epoch), notes when
the first worker reached its first epoch as seen from here (the command's start counted
from before the interpreter starts), then stops the run with Ctrl-C (a clean stop). With
--before REV the same is run with that commit's code, alternately, in the same run.

Then the Python API: in one process, run_study of a tiny synthetic study (2 workers, 2
trials more each call) three times with a pause between calls, as a notebook's cells are
run, with keep_warm off and on, alternately: the wall of the later calls, whose workers
were started as the call before returned.

Run: python bench/bench_startup.py [--repeat 5] [--study notebook] [--before REV]
"""

from __future__ import annotations

import argparse
import contextlib
import json
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


API_CALLS = """
import json, sys, time
import mnist_search as ms
from mnist_search.workers.spawn import release_warm
spec = ms.load_spec({"name": "warm", "description": "bench", "sampler": {"kind": "random"},
                     "fixed": {"dataset": sys.argv[1], "epochs": 1, "hidden": [16]},
                     "search": {"lr": {"low": 0.01, "high": 0.1, "log": True}}})
url = "sqlite:///" + sys.argv[2]
walls = []
for i in range(3):
    time.sleep(float(sys.argv[4]) if i else 0.0)  # reading the results
    start = time.perf_counter()
    ms.run_study(spec, trials=2 * (i + 1), workers=2, storage=url, progress=False,
                 keep_warm=sys.argv[3] == "on")
    walls.append(time.perf_counter() - start)
release_warm()
print(json.dumps(walls))
"""


def api_calls(tmp: Path, keep: str, pause: float) -> list[float]:
    """Walls of three run_study calls in one process (keep_warm `keep`)."""
    from mnist_search.data.synthetic import write_synthetic

    data = tmp / "synthetic"
    if not data.exists():
        write_synthetic(data, n_train=512, n_test=128, seed=0)
    out = subprocess.run([sys.executable, "-c", API_CALLS, str(data),
                          str(tmp / f"a{time.monotonic_ns()}.db"), keep, str(pause)],
                         capture_output=True, text=True, check=True, env=env(None), cwd=tmp)
    walls: list[float] = json.loads(out.stdout.strip().splitlines()[-1])
    return walls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--study", default="notebook")
    ap.add_argument("--before", default=None, help="also run this git revision's code")
    ap.add_argument("--pause", type=float, default=4.0,
                    help="seconds between the API's calls [default: 4]")
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
        print(f"run_study called 3 times in one process, {args.pause:.0f} s apart "
              "(2 workers, tiny trials):")
        later: dict[str, list[float]] = {"off": [], "on": []}
        for _ in range(max(1, args.repeat // 2)):
            for keep in later:
                walls = api_calls(Path(tmp_name), keep, args.pause)
                later[keep] += walls[1:]
                print(f"  keep_warm {keep:<3} calls took {', '.join(f'{w:.2f}' for w in walls)} s")
        off, on = (statistics.median(later[k]) for k in ("off", "on"))
        print(f"a later call: {on:.2f} s kept warm against {off:.2f} s ({off / on:.2f}x; "
              f"median of {len(later['on'])})")


if __name__ == "__main__":
    main()
