"""Progress people can plan by: elapsed, trials per minute, an ETA and the best value."""

from __future__ import annotations

import datetime as dt
import subprocess
import time

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from mnist_search.cli import cli
from mnist_search.workers.progress import clock, snapshot, wait_any

from helpers import write_study


def finished(start: float, seconds: float, stack: int = 1,
             state: TrialState = TrialState.COMPLETE) -> optuna.trial.FrozenTrial:
    t0 = dt.datetime.fromtimestamp(start)
    return optuna.trial.FrozenTrial(
        number=0, state=state, value=90.0 if state == TrialState.COMPLETE else None,
        values=None, datetime_start=t0,
        datetime_complete=t0 + dt.timedelta(seconds=seconds), params={}, distributions={},
        user_attrs={"population_size": stack}, system_attrs={}, intermediate_values={},
        trial_id=0)


def test_eta_is_the_remaining_trials_times_their_share_over_the_workers():
    now = time.time()
    trials = [finished(now, 10.0), finished(now, 40.0, stack=4), finished(now - 999, 100.0)]
    started = time.monotonic() - 60
    snap = snapshot(trials, target=10, workers=2, started=started, since=now - 1, own=set(),
                    best=97.5)
    # this run finished two: shares 10 s and 40/4 = 10 s; 7 to go over 2 workers -> 35 s
    assert snap.done == 3 and snap.eta == 35.0
    assert round(snap.per_minute, 1) == 2.0  # 2 in 60 s
    line = snap.line()
    assert line.startswith("3/10 trials finished, 0 running, best 97.50, 2.0 trials/min")
    assert "elapsed 1:00" in line and "ETA 0:35" in line
    assert clock(3725) == "1:02:05"


def test_an_eta_says_when_it_is_a_floor_or_past_the_timeout():
    import dataclasses

    now = time.time()
    trials = [finished(now, 10.0), finished(now, 2.0, state=TrialState.PRUNED),
              finished(now, 2.0, state=TrialState.PRUNED)]
    snap = snapshot(trials, target=10, workers=1, started=time.monotonic() - 60,
                    since=now - 1, own=set(), best=None)
    assert snap.eta == pytest.approx(7 * 14 / 3)
    assert f"ETA {clock(7 * 14 / 3)} or more (most finished trials were pruned early)" in \
        snap.line()
    late = dataclasses.replace(snap, budget_left=20.0)
    assert "ETA past the timeout, which will end the run first" in late.line()
    assert "ETA 0:" not in late.line()


def test_a_run_logs_progress_lines_when_not_on_a_terminal(tmp_path, synthetic_dir):
    spec = write_study(tmp_path / "p.toml", synthetic_dir, """
trials = 4
[sampler]
kind = "random"
[fixed]
dataset = DATA
epochs = 1
[search]
lr = { low = 0.01, high = 0.1, log = true }
""")
    res = CliRunner().invoke(cli, ["run", str(spec), "--storage",
                                   f"sqlite:///{tmp_path / 's.db'}"], obj={})
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stderr.splitlines() if "trials finished" in ln]
    assert lines and "4/4 trials finished" in lines[-1] and "elapsed" in lines[-1]
    assert "trials/min" in lines[-1]


def test_only_trials_of_other_workers_count_as_running_elsewhere():
    """A trial asked a moment ago has no worker recorded yet: it is not 'elsewhere'."""
    now = time.time()

    def running(worker: str | None) -> optuna.trial.FrozenTrial:
        attrs = {} if worker is None else {"worker": worker}
        return optuna.trial.FrozenTrial(
            number=0, state=TrialState.RUNNING, value=None, values=None,
            datetime_start=dt.datetime.fromtimestamp(now), datetime_complete=None, params={},
            distributions={}, user_attrs=attrs, system_attrs={}, intermediate_values={},
            trial_id=0)

    trials = [running("here:1"), running(None), running("there:7"), running("there:8")]
    snap = snapshot(trials, target=10, workers=1, started=time.monotonic(), since=now,
                    own={"here:1"}, best=None)
    assert snap.running == 4 and snap.elsewhere == 2


def test_a_poll_waits_its_interval_after_one_worker_has_exited_and_ends_at_the_next_exit():
    """Once one worker has exited, each poll still waits for the others: it ends at the next
    exit or after its interval, instead of at once (a loop reading every trial)."""
    exited = subprocess.Popen(["true"], text=True)
    exited.wait()
    late = subprocess.Popen(["sleep", "30"], text=True)
    try:
        start = time.monotonic()
        wait_any([exited, late], 0.4)
        assert time.monotonic() - start >= 0.4
        soon = subprocess.Popen(["sleep", "0.3"], text=True)
        start = time.monotonic()
        wait_any([exited, soon, late], 20.0)
        assert soon.poll() == 0 and time.monotonic() - start < 10.0
    finally:
        late.kill()
        late.wait()
