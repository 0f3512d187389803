"""Many workers on one PostgreSQL study: is the total exact, and what does a claim cost?

Starts --runs `mnist-search run` processes of --workers workers each (4 x 4 = 16 worker
processes by default) at once on one PostgreSQL study of tiny trials (1 epoch on a small
synthetic dataset written here, so the storage, not training, is what they wait on), with
labelled reference trials among them. Checks that the study holds exactly --trials finished
trials, numbered without gaps, none left RUNNING, each label once; prints the claims per
second (trials claimed / wall), the claim latency (each claim, the study lock's wait
included, from the workers' debug lines; p50 / p99 / max), how long claims hold the lock,
and the peak number of server connections.

Run: python bench/bench_workers.py [--storage postgresql+psycopg://...] [--runs 4 --workers 4]
Without --storage it uses $MNIST_SEARCH_TEST_PG, or (as root) starts .ci/postgres.sh's server.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import optuna
import sqlalchemy
from optuna.trial import TrialState

from mnist_search.data.synthetic import write_synthetic

REPO = Path(__file__).resolve().parent.parent
LABELS = 8
STUDY = """description = "bench: many workers"
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
momentum = { low = 0.0, high = 0.9 }
""" + "".join(f'[[reference]]\nlabel = "ref-{i}"\nlr = {0.01 + i / 1000}\n'
              for i in range(LABELS))
CLAIM = re.compile(r"claimed (\d+) trials in ([0-9.]+) s")
HELD = re.compile(r"held the study lock ([0-9.]+) s")


def peak_connections(url: str, stop: threading.Event, out: list[int]) -> None:
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool,
                                      isolation_level="AUTOCOMMIT")
    query = sqlalchemy.text("SELECT count(*) FROM pg_stat_activity "
                            "WHERE datname = current_database()")
    with engine.connect() as conn:
        while not stop.is_set():
            out.append(int(conn.execute(query).scalar() or 0) - 1)
            time.sleep(0.05)
    engine.dispose()


def server_url(given: str | None) -> tuple[str, bool]:
    url = given or os.environ.get("MNIST_SEARCH_TEST_PG")
    if url:
        return url, False
    proc = subprocess.run(["bash", str(REPO / ".ci" / "postgres.sh")], capture_output=True,
                          text=True, check=True)
    return proc.stdout.strip().splitlines()[-1], True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--storage")
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--trials", type=int, default=400)
    args = ap.parse_args()
    url, started = server_url(args.storage)
    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    try:
        run(url, tmp, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if started:
            subprocess.run(["bash", str(REPO / ".ci" / "postgres.sh"), "stop"], check=False)


def run(url: str, tmp: Path, args: argparse.Namespace) -> None:
    name = f"bench-workers-{uuid.uuid4().hex[:8]}"
    data = write_synthetic(tmp / "data", n_train=512, n_test=128)
    spec = tmp / "study.toml"
    spec.write_text(STUDY.replace("NAME", name).replace("TRIALS", str(args.trials))
                    .replace("DATA", f'"{data}"'))
    cli = [sys.executable, "-m", "mnist_search", "-v", "run", str(spec), "--storage", url,
           "--workers", str(args.workers), "--artifacts", str(tmp / "models"),
           "--keep-models", "0"]
    # the first run creates the study and enqueues the labels; the others resume it
    subprocess.run([sys.executable, "-m", "mnist_search", "-q", "run", str(spec), "--storage",
                    url, "--trials", "1", "--artifacts", str(tmp / "models")], check=True)
    stop, conns = threading.Event(), []
    poller = threading.Thread(target=peak_connections, args=(url, stop, conns), daemon=True)
    poller.start()
    start = time.perf_counter()
    procs = [subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(args.runs)]
    errs = [p.communicate(timeout=1800)[1] for p in procs]
    wall = time.perf_counter() - start
    stop.set()
    poller.join(timeout=10)
    codes = [p.returncode for p in procs]
    claims = [(int(m[1]), float(m[2])) for err in errs for m in CLAIM.finditer(err)]
    held = sorted(float(m[1]) for err in errs for m in HELD.finditer(err))
    check(url, name, args.trials, codes, errs)
    taken = [s for n, s in claims if n > 0]
    lat = sorted(taken)
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    claimed = sum(n for n, _ in claims)
    print(f"bench workers: {args.runs} runs x {args.workers} workers on PostgreSQL, "
          f"{args.trials} tiny trials ({claimed} claimed here in {len(taken)} claims, "
          f"{len(claims) - len(taken)} empty) in {wall:.1f} s: "
          f"{claimed / wall:.1f} trials claimed/s; claim latency p50 "
          f"{1000 * statistics.median(lat):.0f} ms, p99 {1000 * p99:.0f} ms, max "
          f"{1000 * lat[-1]:.0f} ms (the lock held p50 {1000 * statistics.median(held):.0f} "
          f"ms, p99 {1000 * held[min(len(held) - 1, int(0.99 * len(held)))]:.0f} ms, "
          f"{sum(held) / wall:.0%} of the wall); peak {max(conns or [0])} server connections; "
          f"total exact, labels once; {os.cpu_count()} cores")


def check(url: str, name: str, target: int, codes: list[int], errs: list[str]) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    assert codes == [0] * len(codes), (codes, [e[-2000:] for e in errs])
    assert sorted(t.number for t in trials) == list(range(target)), len(trials)
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    labels = sorted(t.user_attrs["label"] for t in trials if t.user_attrs.get("label"))
    assert labels == sorted(f"ref-{i}" for i in range(LABELS)), labels


if __name__ == "__main__":
    main()
