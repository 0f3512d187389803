"""Bench C: a TPE search end to end, this code against an older commit's, in one run.

Runs the joint search of studies/search.toml as of --before (depth, width, dropout, L1/L2
lambda, momentum; median pruning; 2 labelled references) for --trials trials with
--workers workers into fresh SQLite files: first with that commit's code, then with this
checkout's, same file, same venv, same study seed. Prints both walls (command start to
exit), both best values, the ratio, and the search's arithmetic: 6 x parameters x train
images x epochs run, summed over trials, as GFLOP/s and as a fraction of an fp32 sgemm
peak measured in the same run on as many threads as the workers use in all, so the
figure means the same on any CPU.

Two workers race for trials, so TPE's proposals (and the shapes trained) differ from run
to run even with one seed, and with them the work: on 2 cores the same code took 43 to 77
s. The work per second (GFLOP/s) is the steadier comparison; --repeat N runs each side N
times, alternating, and reports medians.

--shares prints where this checkout's workers' time went: the sampler's share, the
storage's, and the rest (training and waits), from each worker's ledger (workers/ledger.py).
--tiny runs the same space, sampler and pruner on 512 synthetic images at 2 epochs (a
validation holdout of 128), so that what is measured is the bookkeeping around training:
how a GPU, where training is the small part, sees a search.

Run: .venv/bin/python bench/bench_search.py [--trials 40] [--workers 2] [--before 8626994]
     [--shares] [--tiny]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from before import REPO, checkout, cli, env  # noqa: E402


def sgemm_peak(threads: int, device: str) -> float:
    """GFLOP/s of a large fp32 matrix product on `threads` threads (or the GPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    n = 8192 if device.startswith("cuda") else 2048
    try:
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        for _ in range(2):
            a @ b
        torch.cuda.synchronize() if device.startswith("cuda") else None
        start = time.perf_counter()
        for _ in range(5):
            c = a @ b
        c.sum().item()  # waits for the GPU
        return 5 * 2 * n ** 3 / (time.perf_counter() - start) / 1e9
    finally:
        torch.set_num_threads(before)


def flops(trials: list[optuna.trial.FrozenTrial], train_images: int = 60_000) -> float:
    total = 0.0
    for t in trials:
        config = t.user_attrs.get("config")
        if not config:
            continue
        widths = [784, *config["hidden"], 10]
        params = sum(a * b + b for a, b in zip(widths, widths[1:], strict=False))
        images = train_images - int(config.get("val_size") or 0)
        total += 6 * params * images * len(t.intermediate_values)
    return total


# A worker's last debug line (workers/ledger.py): where its time went.
LEDGER = re.compile(r"time in all ([\d.]+) s, sampler ([\d.]+) s, storage ([\d.]+) s")


def run(tree: Path | None, study: Path, args: argparse.Namespace) -> dict[str, float]:
    shares = args.shares  # (code older than the ledger prints none: no shares)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/search.db"
        start = time.perf_counter()
        extra = args.run_args.split() if tree is None else []
        proc = subprocess.run([*cli(tree), "-v" if shares else "-q", "run", str(study),
                               "--storage", url, "--workers", str(args.workers),
                               "--device", args.device, "--trials", str(args.trials), *extra],
                              env=env(tree), stderr=subprocess.PIPE if shares else None,
                              text=True)
        wall = time.perf_counter() - start
        if proc.returncode not in (0, 3):  # 3: stopped by a --timeout in --run-args
            sys.exit(f"run failed with exit code {proc.returncode}: {(proc.stderr or '')[-500:]}")
        trials = optuna.load_study(study_name="search", storage=url).get_trials()
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    work = flops(done, 512 if args.tiny else 60_000)
    row = {"wall": wall, "best": max(t.value for t in trials if t.state.name == "COMPLETE"),
           "gflops": work / wall / 1e9, "finished": len(done),
           "pruned": sum(t.state.name == "PRUNED" for t in trials)}
    if shares:
        ledgers = [tuple(map(float, m)) for m in LEDGER.findall(proc.stderr)]
        total = sum(w for w, _, _ in ledgers) or math.nan
        row["sampler"] = sum(s for _, s, _ in ledgers) / total
        row["storage"] = sum(s for _, _, s in ledgers) / total
        row["storage_ms"] = 1e3 * sum(s for _, _, s in ledgers) / max(1, len(done))
        row["sampler_ms"] = 1e3 * sum(s for _, s, _ in ledgers) / max(1, len(done))
    return row


def tiny(study: Path, folder: Path) -> Path:
    """The study file with its data swapped for 512 synthetic images, at 2 epochs."""
    from mnist_search.data.synthetic import write_synthetic

    data = write_synthetic(folder / "data", n_train=512, n_test=128, seed=0)
    text = study.read_text().replace('dataset = "mnist"', f"dataset = {json.dumps(str(data))}")
    text = re.sub(r"(?m)^epochs = \d+", "epochs = 2", text)
    text = re.sub(r"(?m)^val_size = \d+", "val_size = 128", text)
    out = folder / "search.toml"
    out.write_text(text)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--before", default="8626994", help="commit to compare with; 'none'")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--run-args", default="", help="more `run` options for this checkout's "
                    "side, as one string (say '--no-mix')")
    ap.add_argument("--shares", action="store_true", help="print the sampler's and the "
                    "storage's share of this checkout's workers' time (their ledgers)")
    ap.add_argument("--tiny", action="store_true", help="512 synthetic images at 2 epochs: "
                    "the search's bookkeeping, not its training")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    peak = sgemm_peak(min(cores, args.workers * max(1, cores // args.workers)), args.device)
    rows: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        tree = None if args.before == "none" else stack.enter_context(checkout(args.before))
        study = (tree or REPO) / "studies" / "search.toml"
        study = tiny(study, folder) if args.tiny else study
        for _ in range(args.repeat):
            if tree is not None:
                rows["before"].append(run(tree, study, args))
            rows["after"].append(run(None, study, args))
    med = {side: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
           for side, runs in rows.items() if runs}
    for side, m in med.items():
        walls = ", ".join(f"{r['wall']:.1f}" for r in rows[side])
        bests = ", ".join(f"{r['best']:.2f}" for r in rows[side])
        print(f"  {side:6} ({args.before if side == 'before' else 'this checkout'}): wall "
              f"{m['wall']:.1f} s [{walls}], best val {m['best']:.2f}% [{bests}], "
              f"{m['gflops']:.0f} GFLOP/s = {m['gflops'] / peak:.0%} of sgemm peak")
    a = med["after"]
    b = med.get("before")
    ratio = f"{b['wall'] / a['wall']:.2f}x the wall and {a['gflops'] / b['gflops']:.2f}x " \
        f"the work per second of {args.before}, best {a['best'] - b['best']:+.2f} pp; " \
        if b else ""
    for side, m in med.items():
        if not math.isnan(m.get("sampler", math.nan)):
            print(f"  {side:6} workers' time: sampler {m['sampler']:.0%} "
                  f"({m['sampler_ms']:.1f} ms per trial), storage {m['storage']:.0%} "
                  f"({m['storage_ms']:.1f} ms per trial), the rest (training, waits) "
                  f"{1 - m['sampler'] - m['storage']:.0%}")
    if a["finished"] < args.trials:
        print(f"  stopped by the run's --timeout: {a['finished']:.0f} of {args.trials} trials "
              "finished")
    print(f"bench C: {args.trials} trials of the joint search, {args.workers} workers, "
          f"{args.device}: {a['wall']:.1f} s; {ratio}search at {a['gflops']:.0f} GFLOP/s, "
          f"{a['gflops'] / peak:.0%} of a {peak:.0f} GFLOP/s sgemm peak; {cores} cores")


if __name__ == "__main__":
    main()
