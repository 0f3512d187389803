"""Run a study with N worker processes and follow it until they finish: `run_study`.

Workers start first, so their torch import overlaps the parent's storage work; the parent
then opens the study (enqueueing its references exactly once, before any worker claims),
gives each worker its orders and follows progress through the storage, so one bar covers
every worker. Ctrl-C or SIGTERM is passed on to the workers, which end their running trials
as FAIL and exit; nothing else is lost. The parent never imports torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from ..config import is_int
from ..errors import ConfigError, RedactingFilter, redact, redact_url
from ..search.artifacts import artifact_dir
from ..search.notes import write_study_note
from ..search.preflight import check_data, check_device, check_spec
from ..search.queue import counts, is_done, unfinished_identities
from ..search.study import as_spec, default_trials, open_study, whole_replicates
from ..spec import MAX_TRIALS, StudySpec
from ..storage.connect import resolve_url
from ..tables import Table

if TYPE_CHECKING:
    import pandas as pd
from ..live import in_kernel
from .context import DEFAULT_HEARTBEAT_S, WorkerOrders, pack_spec
from .progress import best_value, follow
from .signals import stops_recorded
from .spawn import Pool, check_workers, start_ahead, take_early, threads_per_worker

__all__ = ["DEFAULT_POPULATION", "RunInterrupted", "RunOptions", "RunSummary", "run_study",
           "run_with"]

log = logging.getLogger(__name__)

DEFAULT_POPULATION = 16  # trials a worker claims and trains together at most
STOP_GRACE_S = 30.0


@dataclass(frozen=True, repr=False)
class RunOptions:
    """One run's options, whole: what `mnist-search run`'s options and run_study's keywords
    say, under the same names, from the command to the workers' orders (WorkerOrders) and
    their claims (search.queue.Claim). Logged whole at debug level, the URL redacted."""

    trials: int | None = None  # finished trials the study should hold (None: the file's)
    workers: int = 1
    timeout: float | None = None  # seconds: a budget, no trial starts after it
    storage: str | None = None  # a URL (None: $MNIST_SEARCH_STORAGE, else sqlite:///...)
    device: str = "auto"
    seed: int | None = None  # a new study's seed (None: the file's)
    force: bool = False  # resume even if the study file changed
    progress: bool | None = None  # None: a bar where one can show
    heartbeat: int | None = None  # seconds (None: DEFAULT_HEARTBEAT_S; 0: off)
    replicates: int | None = None  # seeds per config (None: the file's)
    population: int = DEFAULT_POPULATION
    mixed: bool | None = None  # trials of any shape fill free slots (None: on a GPU)
    artifacts: str | Path | None = None  # the models' folder (None: beside the storage)
    keep_models: int | None = None  # the best K trials' model files (None: all; 0: none)
    proposals: int | None = None  # most trials asked of the sampler at once
    warm_start: str | None = None  # "STUDY[:K]"
    keep_warm: bool | None = None  # start the next call's workers (None: in a notebook)

    def __repr__(self) -> str:  # the storage URL's password never shown
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}"
                          for f in dataclasses.fields(self))
        return redact(f"RunOptions({shown})")


@dataclass(frozen=True)
class RunSummary:
    """How a run ended. `complete`: the study holds its target of finished trials, every
    labelled trial finished exactly once, and nothing this run could take over is left."""

    study_name: str
    storage: str
    target: int
    counts: dict[str, int]
    best_value: float | None
    seconds: float
    interrupted: bool = False
    worker_errors: tuple[str, ...] = ()
    unfinished: str | None = None  # why work is left undone, if it is
    ran: bool = True  # False: the study already held its target, and no worker started

    @property
    def complete(self) -> bool:
        return not self.interrupted and not self.worker_errors and self.unfinished is None

    def table(self) -> Table:
        c = self.counts
        row = {"study": self.study_name, "finished": f"{c['done']}/{self.target}",
               "complete": c["complete"], "failed": c["failed"] + c.get("failed_alone", 0),
               "running": c["running"],
               "best": self.best_value, "seconds": round(self.seconds, 1)}
        why = "interrupted" if self.interrupted else "; ".join(self.worker_errors) or \
            (f"incomplete: {self.unfinished}" if self.unfinished else "")
        return Table([row], list(row), why)

    def to_pandas(self) -> pd.DataFrame:
        return self.table().to_pandas()

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()

    def __repr__(self) -> str:
        # Jupyter saves text/plain beside the HTML: the storage's password must not be in it
        shown = {f.name: redact_url(self.storage) if f.name == "storage" else getattr(self, f.name)
                 for f in dataclasses.fields(self)}
        return f"RunSummary({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    __str__ = __repr__


def run_study(study: str | Path | StudySpec, *, trials: int | None = None, workers: int = 1,
              timeout: float | None = None, storage: str | None = None, device: str = "auto",
              seed: int | None = None, force: bool = False, progress: bool | None = None,
              heartbeat: int | None = None, replicates: int | None = None,
              population: int = DEFAULT_POPULATION, mixed: bool | None = None,
              artifacts: str | Path | None = None, keep_models: int | None = None,
              proposals: int | None = None, warm_start: str | None = None,
              keep_warm: bool | None = None) -> RunSummary:
    """Run a study file to `trials` finished trials (in total) with `workers` processes.

    Everything it depends on (the file, the dataset and its data, the device, the storage
    URL, where models go) is checked before the storage is touched. A timeout is a budget:
    no trial starts after it, and running ones stop at their next epoch boundary. Every
    COMPLETE trial's model is saved as an artifact (search.artifacts) unless keep_models is 0.
    Each worker trains up to `population` trials at once; with `mixed` (default: on a GPU)
    it fills a free slot at every epoch boundary with a trial of any shape, asking the
    sampler for up to `proposals` trials at once (default: every free slot when mixing,
    else 8). With `keep_warm` (default: in a notebook) it starts the next call's workers as it
    returns, so that a call with the same study, workers and device skips their start-up
    (torch's import, the data); spawn.release_warm() stops them.
    """
    return run_with(study, RunOptions(
        trials=trials, workers=workers, timeout=timeout, storage=storage, device=device,
        seed=seed, force=force, progress=progress, heartbeat=heartbeat, replicates=replicates,
        population=population, mixed=mixed, artifacts=artifacts, keep_models=keep_models,
        proposals=proposals, warm_start=warm_start, keep_warm=keep_warm))


def run_with(study: str | Path | StudySpec, options: RunOptions) -> RunSummary:
    """run_study with its options as one record (what the CLI's `run` builds)."""
    with messages_to_cell(options.progress is not False):
        return _run_study(study, options)


@contextlib.contextmanager
def messages_to_cell(show: bool) -> Iterator[None]:
    """In a notebook, what the CLI would print reaches the cell (stderr): fetching data,
    incomplete, a worker's error (info lines only when `show`). Only while the call runs,
    and only where the caller has configured no logging of their own."""
    package = logging.getLogger("mnist_search")
    if not in_kernel() or package.handlers or logging.getLogger().handlers:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(RedactingFilter())
    before = package.level
    package.addHandler(handler)
    package.setLevel(logging.INFO if show else logging.WARNING)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(before)


def _run_study(study: str | Path | StudySpec, options: RunOptions) -> RunSummary:
    o = options
    log.debug("%r", o)
    start = time.monotonic()
    early = take_early()  # workers the CLI started before importing this module, if any
    try:
        spec = as_spec(study, o.replicates)  # a bad file: one line before any process starts
        _check_trials(o.trials)
        check_workers(o.workers)
        url = resolve_url(o.storage)
        check_spec(spec)
        check_device(o.device)
        models = None if o.keep_models == 0 else str(artifact_dir(url, o.artifacts))
    except BaseException:
        if early is not None:
            early.cancel()
        raise
    if early is not None and not early.fits(o.workers, spec, o.device):
        log.debug("the workers started early do not fit this run: starting others")
        early.cancel()
        early = None
    pool: Pool | None = early
    interrupted, errors, ran = False, list[str](), False
    try:
        check_data(spec, _fetch_progress)
        opened = open_study(spec, url, seed=o.seed, force=o.force, warm_start=o.warm_start)
        target = _target(spec, o.trials)
        ran = counts(opened)["done"] < target
        if ran and pool is None:  # only now: a finished study starts no worker at all
            pool = Pool(o.workers, spec, o.device)
        orders = WorkerOrders(
            spec_path=spec.path, spec=pack_spec(spec), url=url, target=target,
            threads=threads_per_worker(o.workers) if pool is None else pool.threads,
            device=o.device, deadline=None if o.timeout is None else time.time() + o.timeout,
            heartbeat=DEFAULT_HEARTBEAT_S if o.heartbeat is None else o.heartbeat,
            workers=o.workers, population=o.population, mixed=o.mixed,
            overrides=dict(spec.overrides),
            started=start if pool is None or pool.ahead else min(start, pool.started),
            artifacts=models, keep_models=o.keep_models, proposals=o.proposals)
        if ran and pool is not None:
            interrupted, errors = _run_workers(pool, opened, orders, o.progress)
    finally:
        if pool is not None:
            pool.cancel()  # no-op for workers that ran: they have exited
    write_study_note(opened, spec)
    summary = RunSummary(spec.name, url, target, counts(opened), best_value(opened),
                         time.monotonic() - start, interrupted, tuple(errors),
                         _unfinished(opened, orders), ran)
    if in_kernel():  # the lines the CLI ends with, for the cell (the CLI prints its own)
        _tell_cell(summary)
    if interrupted:  # as study.optimize does: "Run All" stops here, not at the next cell
        raise RunInterrupted(summary)
    keep_warm = in_kernel() if o.keep_warm is None else o.keep_warm
    if keep_warm:  # for the next call, likely the same (a cell run again)
        start_ahead(o.workers, spec, o.device)
    return summary


def _tell_cell(summary: RunSummary) -> None:
    for line in summary.worker_errors:
        log.error("%s", line)
    if summary.unfinished is not None:
        log.warning("incomplete: %s; finished trials are kept (run again to resume)",
                    summary.unfinished)
    if summary.interrupted:
        log.warning("interrupted; finished trials are kept, the interrupted ones are FAIL")


class RunInterrupted(KeyboardInterrupt):
    """run_study stopped by Ctrl-C (or SIGTERM, SIGHUP) after its clean stop: finished
    trials are kept and the interrupted ones told FAIL. `summary` says where it stood."""

    def __init__(self, summary: RunSummary) -> None:
        super().__init__(f"{summary.study_name}: interrupted with {summary.counts['done']}/"
                         f"{summary.target} trials finished")
        self.summary = summary


def _check_trials(trials: int | None) -> None:
    if trials is not None and not (is_int(trials) and 1 <= trials <= MAX_TRIALS):
        raise ConfigError("trials", trials, f"an integer in [1, {MAX_TRIALS}]")


def _target(spec: StudySpec, trials: int | None) -> int:
    n_refs = len(spec.references) * spec.replicates
    if trials is not None and trials < n_refs:
        log.warning("--trials %d is fewer than the %d reference trials; the rest stay queued",
                    trials, n_refs)
    if trials is None:
        return default_trials(spec)
    whole = whole_replicates(spec, trials)
    if whole != trials:
        log.warning("--trials %d raised to %d: each sampled config is trained %d times "
                    "(replicates)", trials, whole, spec.replicates)
    return whole


def _fetch_progress(name: str, size: int) -> None:
    log.info("  %s: %.1f MB verified", name, size / 1e6)


def _unfinished(study: optuna.Study, orders: WorkerOrders) -> str | None:
    """Why the study is short of what this run was asked for; None when it is not."""
    trials = study.get_trials(deepcopy=False)
    done = sum(is_done(t) for t in trials)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    dropped, twice = unfinished_identities(trials)
    if twice:
        return f"finished more than once: {', '.join(twice)}"
    if done >= orders.target and not dropped:
        return None
    if orders.deadline is not None and time.time() >= orders.deadline:
        return f"stopped by --timeout with {done}/{orders.target} trials finished"
    blind = [t for t in running if not t.user_attrs.get("heartbeat_s")]
    if running and (blind or not orders.heartbeat):
        return (f"{len(running)} trials still RUNNING without heartbeats, which cannot be told "
                "from a dead worker's: wait for them, or fail them with: mnist-search reap "
                f"{study.study_name} --older-than SECONDS")
    if running:
        return f"{len(running)} trials still running elsewhere"
    if dropped:
        return f"labelled trials failed and not re-run: {', '.join(dropped)}"
    return f"stopped with {done}/{orders.target} trials finished"


_TMP_PREFIX = "mnist-search-"  # then the run's pid: a SIGKILLed run's folder is found by it


def _sweep_orphans() -> None:
    """Remove the temp folders of runs that were killed (SIGKILL leaves no time to): only
    folders named by this package with a dead owner's pid, holding only workers' error
    files, and owned by this user."""
    import re
    import shutil

    root = Path(tempfile.gettempdir())
    for folder in root.glob(f"{_TMP_PREFIX}*-*"):
        m = re.fullmatch(rf"{_TMP_PREFIX}(\d+)-\w+", folder.name)
        if m is None or folder.is_symlink() or not folder.is_dir():
            continue
        try:
            if folder.stat().st_uid != os.getuid():
                continue
            os.kill(int(m[1]), 0)
            continue  # its run is alive
        except ProcessLookupError:
            pass
        except (PermissionError, OSError):
            continue  # alive under another user, or not ours to judge
        if all(re.fullmatch(r"worker-\d+\.err", f.name) for f in folder.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)


def _run_workers(pool: Pool, study: optuna.Study, base: WorkerOrders, progress: bool | None
                 ) -> tuple[bool, list[str]]:
    """Give the pool's workers their orders and follow them to `target` finished trials;
    returns (interrupted, error lines)."""
    level = logging.getLogger("mnist_search").getEffectiveLevel()
    show_bar = (in_kernel() or sys.stderr.isatty() and level <= logging.INFO) \
        if progress is None else progress
    base = dataclasses.replace(base, log_level=logging.WARNING if show_bar else level)
    procs = pool.procs
    _sweep_orphans()
    with tempfile.TemporaryDirectory(prefix=f"{_TMP_PREFIX}{os.getpid()}-") as tmp:
        errs = [os.path.join(tmp, f"worker-{i}.err") for i in range(len(procs))]
        pool.start([json.dumps(dataclasses.asdict(dataclasses.replace(
            base, index=i, error_file=errs[i]))) for i in range(len(procs))])
        interrupted = False
        with stops_recorded():  # a Ctrl-C lands between polls, never inside a storage call
            try:
                follow(study, base.target, procs, show_bar, base.deadline)
            except KeyboardInterrupt:
                interrupted = True
                _stop(procs)
        codes = [p.wait() for p in procs]
        stopped = (130, -signal.SIGINT, -signal.SIGTERM)
        interrupted = interrupted or any(c in stopped for c in codes)
        errors = [_worker_error(i, c, errs[i]) for i, c in enumerate(codes)
                  if c not in (0, *stopped)]
    return interrupted, errors


def _worker_error(index: int, code: int, error_file: str) -> str:
    try:
        with open(error_file) as fh:
            return f"worker {index}: {fh.read().strip()}"
    except OSError:
        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return f"worker {index} {how}; its running trial is failed by the next worker " \
            "after the heartbeat grace, or by: mnist-search reap STUDY"


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    """Pass the interrupt on; give workers time to tell FAIL, then kill stragglers."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
