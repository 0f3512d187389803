"""A chaos run: one study with labelled references on PostgreSQL, trained by `run`s of
several workers while random workers and whole runs are SIGKILLed and the server restarts;
then the invariants a user relies on are checked, and the faults injected and survived are
printed. Exit 0 when every invariant holds, 1 otherwise.

    python bench/bench_chaos.py --url postgresql+psycopg://postgres@127.0.0.1:55432/mnist_search

Defaults: 200 trials (8 of them labelled references), 3 workers per run, 180 s of faults,
2 server restarts (by `.ci/postgres.sh restart`, so it needs root and the server that script
started: its MNIST_SEARCH_PG_DIR and MNIST_SEARCH_PG_PORT, if not the defaults). The trials
train on synthetic data, for enough epochs (--epochs; by default sized from the window,
the trials and the workers) that the study outlasts the faults: a study finished before
them would leave the faults nothing live to hit. Invariants:
- the study holds exactly its target of finished trials, and every label finished once;
- nothing is RUNNING;
- every fail_reason is one of the documented ones (docs/runs-and-workers.md);
- a sample of COMPLETE trials re-runs bit for bit (`rerun_trial`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXE = Path(sys.executable).with_name("mnist-search")
REASONS = {"nonfinite", "invalid_config", "out_of_memory", "timeout", "interrupted", "error",
           "stale"}
STUDY = """description = "chaos"
name = "{name}"
seed = 7
trials = {trials}
[sampler]
kind = "random"
[fixed]
dataset = {data}
epochs = {epochs}
hidden = [256]
[search]
lr = {{ low = 0.005, high = 0.1, log = true }}
momentum = {{ low = 0.0, high = 0.9 }}
""" + "".join(f'[[reference]]\nlabel = "ref-{i}"\nlr = {0.01 + i / 500}\nmomentum = 0.5\n'
              for i in range(8))


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a run's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def command(spec: Path, url: str, workers: int) -> list[str]:
    # heartbeats every 2 s (stale after 6): a killed worker's trials are taken over soon;
    # no model files (the weights' digests are recorded all the same, for the re-runs)
    return [str(EXE), "-q", "run", str(spec), "--storage", url, "--workers", str(workers),
            "--heartbeat", "2", "--keep-models", "0"]


def start(spec: Path, url: str, workers: int, log: Path) -> subprocess.Popen[bytes]:
    """A `run` in its own session, so the whole run (parent and workers) can be killed."""
    with log.open("ab") as out:
        return subprocess.Popen(command(spec, url, workers), stdout=out, stderr=out,
                                start_new_session=True)


def restart_server(down_s: float) -> None:
    subprocess.run(["bash", str(REPO / ".ci" / "postgres.sh"), "restart", str(down_s)],
                   check=True, capture_output=True, timeout=120)


def inject(args: argparse.Namespace, spec: Path, log: Path) -> dict[str, int]:
    """Faults until the deadline; returns how many of each kind were injected."""
    rng = random.Random(args.seed)
    faults = {"worker killed": 0, "run killed": 0, "server restarted": 0, "runs started": 0}
    restarts = [args.seconds * (i + 1) / (args.restarts + 1) for i in range(args.restarts)]
    began = time.monotonic()
    proc = None
    while (elapsed := time.monotonic() - began) < args.seconds:
        if proc is None or proc.poll() is not None:
            proc = start(spec, args.url, args.workers, log)
            faults["runs started"] += 1
        time.sleep(rng.uniform(2.0, 6.0))
        if restarts and elapsed >= restarts[0]:
            restarts.pop(0)
            restart_server(rng.choice([0.0, 3.0]))
            faults["server restarted"] += 1
        elif rng.random() < 0.5:
            workers = children(proc.pid)
            if workers:
                os.kill(rng.choice(workers), signal.SIGKILL)
                faults["worker killed"] += 1
        elif proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            faults["run killed"] += 1
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the last fault: the final run starts clean
        proc.wait()
        faults["run killed"] += 1
    return faults


def check(args: argparse.Namespace, name: str) -> list[str]:
    """The invariants, as lines saying what broke (empty: all hold)."""
    import optuna
    from optuna.trial import TrialState

    import mnist_search as ms
    from mnist_search.search.queue import is_done
    from mnist_search.storage.internals import (
        backend_of,
        storage_of,
        trial_id,
        trials_with_heartbeat,
    )

    study = optuna.load_study(study_name=name, storage=args.url)
    trials = study.get_trials()
    broken = []
    done = [t for t in trials if is_done(t)]
    if len(done) != args.trials:
        broken.append(f"{len(done)} finished trials, not {args.trials}")
    labels = [t.user_attrs["label"] for t in done if "label" in t.user_attrs]
    if sorted(labels) != sorted(f"ref-{i}" for i in range(8)):
        broken.append(f"labels finished: {sorted(labels)}")
    running = [t for t in trials if t.state == TrialState.RUNNING]
    if running:
        broken.append(f"RUNNING: {[t.number for t in running]}")
        beating = trials_with_heartbeat(backend_of(storage_of(study)))
        for t in running:  # what a trial left RUNNING holds says where its claim stopped
            print(f"left RUNNING: trial {t.number}, started {t.datetime_start}, heartbeat "
                  f"row {'yes' if trial_id(t) in beating else 'no'}, user attrs "
                  f"{sorted(t.user_attrs)}, params {t.params}")
    reasons = {t.user_attrs.get("fail_reason") for t in trials if t.state == TrialState.FAIL}
    if reasons - REASONS:
        broken.append(f"undocumented fail reasons: {sorted(map(str, reasons - REASONS))}")
    complete = [t.number for t in trials if t.state == TrialState.COMPLETE]
    for number in random.Random(args.seed).sample(complete, min(args.reruns, len(complete))):
        report, _ = ms.rerun_trial(study, number)
        if not report.identical:
            broken.append(f"trial {number} did not re-run bit for bit: {report}")
    fails = {str(r): sum(t.user_attrs.get("fail_reason") == r for t in trials
                         if t.state == TrialState.FAIL) for r in reasons}
    print(f"trials: {len(trials)} in all, {len(done)} finished, fail reasons {fails}, "
          f"{min(args.reruns, len(complete))} re-run")
    return broken


def epochs(args: argparse.Namespace) -> int:
    """Epochs per trial so that the study outlasts the faults: 60 trials of 8 epochs took
    38 s with 2 workers on 2 cores (2026-12-06), undisturbed; the faults add their lost
    work on top."""
    if args.epochs is not None:
        return int(args.epochs)
    return max(2, math.ceil(8 * (args.seconds / 40) * (60 / args.trials) *
                            (min(args.workers, 2) / 2)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("MNIST_SEARCH_TEST_PG"))
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--reruns", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per trial [default: enough for the study to outlast "
                             "the faults]")
    parser.add_argument("--keep-log", type=Path, default=None,
                        help="where to copy the runs' logs when an invariant breaks")
    args = parser.parse_args()
    if not args.url:
        parser.error("--url (or $MNIST_SEARCH_TEST_PG) names the PostgreSQL server")
    from mnist_search.data.synthetic import write_synthetic

    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        where = Path(tmp)
        write_synthetic(where / "data", n_train=8192, n_test=128)
        name = f"chaos-{uuid.uuid4().hex[:8]}"
        spec = where / "chaos.toml"
        spec.write_text(STUDY.format(name=name, trials=args.trials, epochs=epochs(args),
                                     data=json.dumps(str(where / "data"))))
        log = where / "runs.log"
        started = time.monotonic()
        faults = inject(args, spec, log)
        final = subprocess.run(command(spec, args.url, args.workers), capture_output=True,
                               text=True, timeout=900)
        wall = time.monotonic() - started
        print(f"faults injected over {args.seconds:.0f} s: " +
              ", ".join(f"{v} {k}" for k, v in faults.items()))
        print(f"the final run: exit {final.returncode} after {wall:.0f} s in all"
              + (f"; it said: {final.stderr.strip()[-300:]}" if final.returncode else ""))
        broken = check(args, name)
        if final.returncode != 0:
            broken.append(f"the final run exited {final.returncode}")
        if broken and args.keep_log:  # the runs' own lines, for what the invariants miss
            args.keep_log.write_bytes(log.read_bytes() + final.stderr.encode())
    print("invariants: " + ("all hold" if not broken else "BROKEN: " + "; ".join(broken)))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
