"""Following a running study: elapsed time, trials per minute, an ETA and the best value
so far, as a bar on a terminal, a display updated in place in a Jupyter notebook's cell
(tqdm's widget where ipywidgets is installed), and as log lines otherwise.

The ETA comes from the trials this run finished: each one's share of its worker's time (a
stacked trial's duration divided by its stack's size), times the trials still to finish,
divided by the workers.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..live import live_display
from ..search.queue import is_done
from .signals import raise_if_stopped

__all__ = ["Snapshot", "best_trial", "best_value", "follow", "snapshot"]

log = logging.getLogger(__name__)

POLL_S = 0.5


@dataclass(frozen=True)
class Snapshot:
    """Where a run stands, from one read of the study."""

    done: int
    running: int
    elsewhere: int  # RUNNING in workers that are not this run's
    target: int
    elapsed: float  # seconds since the run started following
    per_minute: float | None  # trials this run finished per minute
    eta: float | None  # seconds until the target, from the trials' times
    best: float | None
    budget_left: float | None = None  # seconds until --timeout, when one is set
    pruned_share: float = 0.0  # of this run's finished trials, the part pruned early
    pruned: int = 0  # in the study
    failed: int = 0  # in the study, failed for any reason
    best_trial: int | None = None  # the number of the best trial so far

    def line(self) -> str:
        parts = [f"{self.done}/{self.target} trials finished", f"{self.running} running"]
        if self.pruned or self.failed:
            parts.append(f"{self.pruned} pruned, {self.failed} failed")
        if self.best is not None:
            parts.append(f"best {self.best:.2f}" + ("" if self.best_trial is None else
                                                    f" (trial {self.best_trial})"))
        if self.per_minute is not None:
            parts.append(f"{self.per_minute:.1f} trials/min")
        parts.append(f"elapsed {clock(self.elapsed)}")
        if self.eta is not None and self.budget_left is not None and \
                self.eta > self.budget_left:
            parts.append("ETA past the timeout, which will end the run first")
        elif self.eta is not None:
            # An estimate from mostly pruned trials is a floor: whole trials take longer.
            parts.append(f"ETA {clock(self.eta)}" + (
                " or more (most finished trials were pruned early)"
                if self.pruned_share > 0.5 else ""))
        if self.budget_left is not None:
            parts.append(f"timeout in {clock(max(0.0, self.budget_left))}")
        return ", ".join(parts)


def clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _share(trial: FrozenTrial) -> float | None:
    """A finished trial's share of its worker's time: a stack's members split its wall."""
    if trial.duration is None:
        return None
    return trial.duration.total_seconds() / max(1, int(trial.user_attrs.get("population_size")
                                                       or 1))


def snapshot(trials: Sequence[FrozenTrial], target: int, workers: int, started: float,
             since: float, own: set[str], best: float | None) -> Snapshot:
    """`since`: time.time() the run began, to tell its own finished trials from older ones."""
    done = sum(is_done(t) for t in trials)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    mine = [t for t in trials if is_done(t) and t.datetime_complete is not None
            and t.datetime_complete.timestamp() >= since]
    elapsed = time.monotonic() - started
    shares = [s for s in map(_share, mine) if s is not None]
    eta = None
    if shares and done < target:
        eta = (target - done) * (sum(shares) / len(shares)) / max(1, workers)
    pruned = sum(t.state == TrialState.PRUNED for t in mine) / len(mine) if mine else 0.0
    # A trial asked a moment ago has no worker recorded yet: not "elsewhere" for that
    elsewhere = sum(t.user_attrs.get("worker") not in (None, *own) for t in running)
    return Snapshot(done, len(running), elsewhere, target, elapsed,
                    60 * len(mine) / elapsed if mine and elapsed > 0 else None, eta, best,
                    pruned_share=pruned,
                    pruned=sum(t.state == TrialState.PRUNED for t in trials),
                    failed=sum(t.state == TrialState.FAIL for t in trials))


def follow(study: optuna.Study, target: int, procs: list[subprocess.Popen[str]],
           show_bar: bool, deadline: float | None = None) -> None:
    """Progress from the storage until every worker has exited; trials RUNNING in workers
    outside this run (another machine, a dead worker) are named when their number changes."""
    own = {f"{socket.gethostname()}:{p.pid}" for p in procs}
    started, since = time.monotonic(), time.time()
    bar = live_display(study.study_name, target, "trial", True) if show_bar else None
    last: tuple[int, int] = (-1, 0)
    try:
        while any(p.poll() is None for p in procs):
            wait_any(procs, POLL_S)
            best = best_trial(study)
            snap = snapshot(study.get_trials(deepcopy=False), target, len(procs), started,
                            since, own, None if best is None else best[1])
            snap = dataclasses.replace(snap, best_trial=None if best is None else best[0])
            if deadline is not None:
                snap = dataclasses.replace(snap, budget_left=deadline - time.time())
            if bar is not None:  # redraw every poll: the clock moves
                bar.n = min(snap.done, target)
                bar.set_postfix_str(", ".join(snap.line().split(", ")[1:]))
                bar.refresh()
            if (snap.done, snap.elsewhere) == last:
                continue
            if snap.elsewhere and snap.elsewhere != last[1]:
                log.info("waiting for %d trials running elsewhere (run here if their heartbeat "
                         "goes stale)", snap.elsewhere)
            last = (snap.done, snap.elsewhere)
            if bar is None:
                log.info("%s: %s", study.study_name, snap.line())
    finally:
        if bar is not None:
            bar.close()


def wait_any(procs: list[subprocess.Popen[str]], seconds: float) -> None:
    """Sleep up to `seconds`, returning as soon as a worker still running at the call exits
    (so the end is not late), and at once for Ctrl-C (the handler only records it)."""
    # Only the workers alive now: one that exited before must not end every wait at once,
    # which made the last poll interval a loop reading every trial, on the cores the last
    # workers were finishing their trials on
    alive = [p for p in procs if p.poll() is None]
    end = time.monotonic() + seconds
    while time.monotonic() < end and alive and all(p.poll() is None for p in alive):
        raise_if_stopped()
        time.sleep(0.02)


def best_value(study: optuna.Study) -> float | None:
    best = best_trial(study)
    return None if best is None else best[1]


def best_trial(study: optuna.Study) -> tuple[int, float] | None:
    """(number, value) of the best trial so far; None before one, or for a Pareto front."""
    if len(study.directions) > 1:
        return None  # a Pareto front, not one best value
    try:
        trial = study.best_trial
    except ValueError:
        return None
    return (trial.number, float(trial.value)) if trial.value is not None else None
