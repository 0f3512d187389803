"""A study's bookkeeping per trial, against Optuna's own loop, in one run.

Tiny trials (1 epoch of `hidden = [16]` on 512 synthetic images, random sampler), so what
is measured is everything around training: the claim, the ask, attrs, heartbeats, the tell,
the model file. In one run, on fresh studies of one storage:

- `run` with 1 and 2 workers on SQLite (and 4 on PostgreSQL with --pg URL or
  $MNIST_SEARCH_TEST_PG), trials/s over the trials' own span (first start to last
  finish, so process start-up is left out; the wall with start-up is printed beside it);
- Optuna's `study.optimize` on the same storage, its objective calling `mnist_search.train`
  for the same configs (4 processes of it for PostgreSQL, the way Optuna distributes);
- the same loop with a no-op objective;
- `mnist_search.train` alone, for the training time per trial.

Prints trials/s, ms per trial outside training, and ours / Optuna's ratio. With --before,
each case runs this tree and that revision in turn, --repeat times (the median kept), so a
drift of the machine's speed during the run falls on both alike.

Run: python bench/bench_bookkeeping.py [--trials 200] [--pg URL] [--before REV] [--repeat N]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parent.parent
STUDY = """description = "bench: bookkeeping"
name = "NAME"
seed = 0
trials = TRIALS
[sampler]
kind = "random"
[fixed]
dataset = DATA
epochs = 1
hidden = [16]
[search]
lr = { low = 0.001, high = 0.1, log = true }
"""


def span_rate(url: str, name: str) -> tuple[int, float]:
    """(finished trials, trials/s from the first start to the last finish)."""
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    done = [t for t in trials if t.state.is_finished() and t.datetime_complete]
    first = min(t.datetime_start for t in done if t.datetime_start)
    last = max(t.datetime_complete for t in done if t.datetime_complete)
    return len(done), len(done) / max(1e-9, (last - first).total_seconds())


def ours(tree: Path | None, data: Path, tmp: Path, url: str, trials: int, workers: int,
         *extra: str) -> tuple[float, float]:
    """(trials/s over the trials' span, wall seconds with start-up) of `mnist-search run`."""
    name = f"ours-{uuid.uuid4().hex[:8]}"
    spec = tmp / f"{name}.toml"
    spec.write_text(STUDY.replace("NAME", name).replace("TRIALS", str(trials))
                    .replace("DATA", json.dumps(str(data))))
    env = {**os.environ, "PYTHONPATH": str(tree or REPO)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mnist_search", "-q", "run", str(spec), "--storage",
                    url, "--workers", str(workers), "--device", "cpu", *extra],
                   check=True, env=env, cwd=tmp)
    wall = time.perf_counter() - start
    n, rate = span_rate(url, name)
    assert n == trials, f"{n} of {trials} finished"
    return rate, wall


def _optuna_loop(url: str, name: str, trials: int, data: str, train: bool) -> None:
    import torch

    import mnist_search as ms

    torch.set_num_threads(1)
    loaded = ms.load_data(data) if train else None

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 0.001, 0.1, log=True)
        if loaded is None:
            return lr
        config = ms.TrainConfig(dataset=data, hidden=(16,), epochs=1, lr=lr, device="cpu",
                                seed=trial.number)
        return ms.train(config, loaded).test_accuracy

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=url,
                              sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=trials)


def optuna_rate(url: str, trials: int, data: Path, train: bool, processes: int) -> float:
    """Trials/s over the span of Optuna's own loop in `processes` processes."""
    name = f"optuna-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=url, direction="maximize")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_optuna_loop, args=(url, name, trials // processes,
                                                      str(data), train))
             for _ in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return span_rate(url, name)[1]


def train_seconds(data: Path, n: int = 50) -> float:
    import torch

    import mnist_search as ms

    torch.set_num_threads(1)
    loaded = ms.load_data(str(data))
    config = ms.TrainConfig(dataset=str(data), hidden=(16,), epochs=1, device="cpu")
    ms.train(config, loaded)
    start = time.perf_counter()
    for seed in range(n):
        ms.train(ms.TrainConfig(**{**config.to_dict(), "seed": seed}), loaded)
    return (time.perf_counter() - start) / n


def line(what: str, rate: float, train_s: float, reference: float | None = None) -> str:
    outside = 1000 * (1 / rate - train_s)
    ratio = f"  {rate / reference:5.2f}x Optuna's loop" if reference else ""
    return f"  {what:<58} {rate:7.1f} trials/s  {outside:6.1f} ms/trial outside training{ratio}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--pg", default=os.environ.get("MNIST_SEARCH_TEST_PG"),
                    help="a PostgreSQL URL for the 4-worker case [default: "
                         "$MNIST_SEARCH_TEST_PG; none: skipped]")
    ap.add_argument("--before", default=None, help="also run `run` of this git revision")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of each case per tree, in turn; the median is printed")
    args = ap.parse_args()
    from mnist_search.data.synthetic import write_synthetic

    sys.path.insert(0, str(REPO / "bench"))
    from before import checkout

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = write_synthetic(tmp / "data", n_train=512, n_test=128, seed=0)
        url = f"sqlite:///{tmp / 'book.db'}"
        optuna.create_study(study_name="init", storage=url)  # the schema, made once
        train_s = train_seconds(data)
        print(f"bookkeeping: {args.trials} tiny trials; mnist_search.train alone "
              f"{1000 * train_s:.1f} ms/trial; {os.cpu_count()} CPUs")
        trees: list[tuple[str, Path | None]] = [("this tree", None)]
        with checkout(args.before) if args.before else contextlib.nullcontext() as old:
            if old is not None:
                trees.append((args.before, old))
            print("SQLite:")
            ref = optuna_rate(url, args.trials, data, True, 1)
            noop = optuna_rate(url, args.trials, data, False, 1)
            print(line("Optuna's study.optimize, training", ref, train_s))
            print(line("Optuna's study.optimize, no-op objective", noop, 0.0))
            cases = [(1, ()), (1, ("--keep-models", "0")), (2, ())]
            for workers, extra in cases:
                what = " ".join(["run --workers", str(workers), *extra])
                measured = in_turn(trees, args.repeat, functools.partial(
                    _ours_case, data=data, tmp=tmp, url=url, trials=args.trials,
                    workers=workers, extra=extra))
                for label, (rate, wall) in measured.items():
                    print(line(f"{what} ({label}; wall {wall:.1f} s)", rate, train_s, ref))
                compare(measured)
            if args.pg:
                print("PostgreSQL, 4 processes:")
                ref = optuna_rate(args.pg, args.trials, data, True, 4)
                print(line("Optuna's study.optimize x 4 processes, training", ref, train_s))
                measured = in_turn(trees, args.repeat, lambda tree: ours(
                    tree, data, tmp, args.pg, args.trials, 4, "--artifacts",
                    str(tmp / "models")))
                for label, (rate, wall) in measured.items():
                    print(line(f"run --workers 4 ({label}; wall {wall:.1f} s)", rate, train_s,
                               ref))
                compare(measured)


def _ours_case(tree: Path | None, *, data: Path, tmp: Path, url: str, trials: int,
               workers: int, extra: tuple[str, ...]) -> tuple[float, float]:
    return ours(tree, data, tmp, url, trials, workers, *extra)


def in_turn(trees: list[tuple[str, Path | None]], repeat: int,
            run: Callable[[Path | None], tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """Each tree's (rate, wall), the trees run in turn `repeat` times: the median rate's."""
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in trees}
    for _ in range(repeat):
        for label, tree in trees:
            runs[label].append(run(tree))
    return {label: sorted(got)[len(got) // 2] for label, got in runs.items()}


def compare(measured: dict[str, tuple[float, float]]) -> None:
    if len(measured) == 2:
        (_, (now, _)), (label, (then, _)) = measured.items()
        print(f"    this tree / {label}: {now / then:.2f}x (trials/s, in turn)")

if __name__ == "__main__":
    main()
