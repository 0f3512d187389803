"""Several worker processes on one SQLite file while optuna-dashboard reads it.

Run with -s to see trials/s per worker count.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.request

import pytest
from optuna.trial import TrialState

from helpers import exe, integrity, start_run, trials, wait_for, write_study

FAST = """
trials = TRIALS
[sampler]
kind = "random"
[fixed]
dataset = DATA
epochs = 1
[search]
lr = { low = 0.001, high = 0.1, log = true }
momentum = { low = 0.0, high = 0.9 }
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DashboardPoller:
    """optuna-dashboard on the same file, its API polled in a loop until stopped."""

    def __init__(self, url: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([exe("optuna-dashboard"), url, "--host", "127.0.0.1",
                                      "--port", str(self.port), "--quiet"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.stop = threading.Event()
        self.ok = self.errors = 0
        base = f"http://127.0.0.1:{self.port}"
        wait_for(lambda: self._get(f"{base}/api/studies") is not None, 30, "the dashboard")
        self.thread = threading.Thread(target=self._loop, args=(base,), daemon=True)
        self.thread.start()

    def _get(self, url: str):
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def _loop(self, base: str) -> None:
        while not self.stop.is_set():
            studies = self._get(f"{base}/api/studies")
            if studies is None:
                self.errors += 1
            else:
                self.ok += 1
                for s in studies.get("studies", []):
                    detail = self._get(f"{base}/api/studies/{s['study_id']}?after=0")
                    self.ok, self.errors = (self.ok + 1, self.errors) if detail is not None \
                        else (self.ok, self.errors + 1)
            time.sleep(0.05)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2, 4])
def test_workers_and_dashboard_share_one_sqlite_file(tmp_path, synthetic_dir, workers):
    n = 50 * workers
    spec = write_study(tmp_path / "fast.toml", synthetic_dir, FAST.replace("TRIALS", str(n)))
    db = tmp_path / "f.db"
    url = f"sqlite:///{db}"
    # create the study first so the dashboard has something to read from the start
    first = start_run(spec, url, "--trials", "1")
    first.communicate(timeout=120)
    dash = DashboardPoller(url)
    try:
        start = time.perf_counter()
        proc = start_run(spec, url, "--workers", str(workers))
        out, err = proc.communicate(timeout=600)
        wall = time.perf_counter() - start
    finally:
        dash.close()
    assert proc.returncode == 0, err
    final = trials(url, "fast")
    numbers = [t.number for t in final]
    assert len(final) == n  # 0 lost, nothing extra
    assert sorted(numbers) == list(range(n))  # 0 duplicated numbers, no gaps
    assert all(t.state == TrialState.COMPLETE for t in final)
    assert "locked" not in err.lower()
    assert dash.ok > 0 and dash.errors == 0
    assert integrity(db) == "ok"
    print(f"\n{workers} worker(s): {n - 1} trials in {wall:.1f} s = {(n - 1) / wall:.1f} "
          f"trials/s (incl. start-up), dashboard answered {dash.ok} requests, 0 errors")


LABELLED = """
[sampler]
kind = "grid"
[fixed]
dataset = DATA
epochs = 1
""" + "".join(f'[[reference]]\nlabel = "ref-{i:02d}"\nlr = {0.001 * (i + 1):.3f}\n'
              for i in range(24))


@pytest.mark.slow
def test_four_workers_evaluate_each_label_exactly_once(tmp_path, synthetic_dir):
    spec = write_study(tmp_path / "refs.toml", synthetic_dir, LABELLED)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    proc = start_run(spec, url, "--workers", "4")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    final = trials(url, "refs")
    labels = [t.user_attrs["label"] for t in final]
    assert len(final) == 24 and sorted(labels) == [f"ref-{i:02d}" for i in range(24)]
    assert all(t.state == TrialState.COMPLETE for t in final)
    assert len({t.user_attrs["worker"] for t in final}) > 1  # really shared between workers
