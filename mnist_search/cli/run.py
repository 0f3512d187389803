"""The commands that run a study: run, reap (clean up after dead workers), dashboard."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ..errors import UsageError
from ..spec import MAX_REPLICATES, MAX_TRIALS, load_spec
from .common import (
    INCOMPLETE,
    INTERRUPTED,
    RUNTIME,
    artifacts_option,
    fail,
    friendly,
    quiet,
    storage_option,
    use_storage,
)

__all__ = ["dashboard_cmd", "reap_cmd", "run_cmd"]

log = logging.getLogger("mnist_search")


@click.command("run")
@click.argument("study_file", type=click.Path(path_type=Path))
@click.option("--trials", type=click.IntRange(1, MAX_TRIALS), default=None,
              help="Finished trials the study should hold in total [default: the file's].")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes; CPU threads are split between them.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="A budget in seconds: no trial starts after it, and running ones stop at "
                   "their next epoch (FAIL, reason 'timeout'; labelled ones run again next "
                   "time).")
@storage_option
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Study seed for a new study [default: the file's].")
@click.option("--population", type=click.IntRange(min=1), default=16, show_default=True,
              help="Slots: most trials a worker trains at once; same-shape ones that start "
                   "together train stacked.")
@click.option("--proposals", type=click.IntRange(min=1), default=None, metavar="N",
              help="Most trials asked of the sampler at once, proposed before any of them "
                   "is told [default: every free slot with --mix, else 8].")
@click.option("--mix/--no-mix", "mixed", default=None,
              help="Fill free slots at each epoch boundary with trials of any shape "
                   "[default: on a GPU only; on a CPU mixing shapes gains nothing].")
@click.option("--warm-start", "warm_start", metavar="STUDY[:K]", default=None,
              help="Begin with the K best configs (default 5) of another stored study that "
                   "fit this one's space, each once [default: the file's warm_start].")
@click.option("--replicates", type=click.IntRange(1, MAX_REPLICATES), default=None,
              help="Run each reference trial with K seeds [default: the file's, or 1].")
@click.option("--force", is_flag=True, help="Resume even if the study file changed.")
@artifacts_option
@click.option("--keep-models", type=click.IntRange(min=0), default=None, metavar="K",
              help="Keep only the best K trials' model files (0: save none) [default: all; "
                   "a baseline 784-128-64-10 model is 0.44 MB].")
@click.option("--heartbeat", type=click.IntRange(min=0), default=None,
              help="Heartbeat interval in seconds [default: 10]. A trial whose heartbeat is "
                   "older than 3x this is a dead worker's: it is failed and re-run. 0 = off: "
                   "such trials cannot be told from slow ones, so a run neither waits for "
                   "nor takes them over (see reap --older-than).")
@click.option("--tf32", is_flag=True,
              help="float32 matmuls on TF32 tensor cores (CUDA): the file's "
                   "matmul_precision = 'tf32', recorded with each trial and honoured by rerun.")
@friendly
def run_cmd(study_file: Path, trials: int | None, workers: int,
            timeout: float | None, storage: str | None, device: str, seed: int | None,
            population: int, proposals: int | None, mixed: bool | None, warm_start: str | None,
            replicates: int | None, force: bool, artifacts: Path | None,
            keep_models: int | None, heartbeat: int | None, tf32: bool) -> None:
    """Create or resume the study in STUDY_FILE and run it to --trials finished trials.

    Trials left RUNNING by workers elsewhere are waited for; those whose heartbeat goes stale
    are failed and re-run here. Exit 0 when the study holds its target, every labelled trial
    finished once and nothing is left to take over; 3 when it stops with work left (its
    --timeout, trials still running elsewhere), 1 on errors, 130 on Ctrl-C.

    \b
    Example:
      mnist-search run studies/notebook.toml --workers 2
    """
    from ..storage.connect import checked_url, has_study
    from ..workers.signals import stop_on_signals
    from ..workers.spawn import check_workers, start_early

    stop_on_signals()  # from here: a Ctrl-C during the imports below is not lost

    study = load_spec(study_file)  # a bad file is one line before any process starts
    if tf32:
        study = study.with_fixed(matmul_precision="tf32")
    check_workers(workers, warn=False)  # run_study warns, once
    # a URL that is no URL is one line before any worker starts; a stored study may have
    # nothing left to run, so its workers start once run_study knows there is. The URL's
    # passwords are noted (use_storage) once the workers have started: nothing is printed
    # meanwhile, and noting them imports SQLAlchemy, which would delay the start by 0.3 s
    if not has_study(checked_url(storage), study.name):
        # their imports overlap this process's, next
        start_early(workers, study, device, click.get_current_context().obj.get("started"))

    from ..workers.pool import RunInterrupted, RunOptions, run_with

    url = use_storage(storage)
    try:
        summary = run_with(study, RunOptions(
            trials=trials, workers=workers, timeout=timeout, storage=url, device=device,
            seed=seed, force=force, progress=False if quiet() else None, heartbeat=heartbeat,
            replicates=replicates, population=population, mixed=mixed, artifacts=artifacts,
            keep_models=keep_models, proposals=proposals, warm_start=warm_start))
    except RunInterrupted as stop:
        summary = stop.summary
    c = summary.counts
    best = "-" if summary.best_value is None else f"{summary.best_value:.2f}"
    if not summary.ran:
        click.echo(f"{summary.study_name}: nothing to run: {c['done']} trials finished, "
                   f"{summary.target} asked for ({c['complete']} complete, "
                   f"{c['failed'] + c['failed_alone']} failed), best {best}")
        return
    click.echo(f"{summary.study_name}: {c['done']}/{summary.target} trials finished "
               f"({c['complete']} complete, {c['failed'] + c['failed_alone']} failed, "
               f"{c['running']} running), "
               f"best {best}, {summary.seconds:.1f} s"
               + ("" if summary.unfinished is None else f"; incomplete: {summary.unfinished}"))
    if summary.interrupted:
        fail("interrupted; finished trials are kept, the interrupted ones are FAIL "
              "(run again to resume)", INTERRUPTED)
    if summary.worker_errors:
        fail(summary.worker_errors[0] + (f" (and {len(summary.worker_errors) - 1} more)"
                                           if len(summary.worker_errors) > 1 else ""), RUNTIME)
    if summary.unfinished is not None:
        fail(f"incomplete: {summary.unfinished}; finished trials are kept (run again to "
             "resume)", INCOMPLETE)
    if c["complete"] == 0 and c["done"] > 0:
        fail(f"no trial completed: {c['failed_alone']} failed alone (see their fail_reason: "
             f"mnist-search show {summary.study_name})", RUNTIME)


@click.command("reap")
@click.argument("study")
@storage_option
@click.option("--older-than", type=click.FloatRange(min=0), default=None, metavar="S",
              help="Also fail RUNNING trials without heartbeats started more than S seconds "
                   "ago, and use S as the heartbeat grace (only when no live worker runs "
                   "trials that long). 0: any age, for when no worker is left at all.")
@friendly
def reap_cmd(study: str, storage: str | None, older_than: float | None) -> None:
    """Fail trials left RUNNING by dead workers; re-enqueue their labels.

    Trials with heartbeats are stale after 3x their heartbeat interval (or --older-than).
    """
    from ..results.rows import load_study
    from ..search.reap import reap

    url = use_storage(storage)
    load_study(study, url)  # a clear error for an unknown name
    report = reap(study, url, older_than)
    click.echo(f"{study}: failed {len(report.failed)} stale trials {list(report.failed)}, "
               f"re-enqueued {len(report.requeued)}, {len(report.left_running)} still running")


@click.command("dashboard")
@storage_option
@artifacts_option
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port to serve on; 0 picks a free one.")
@click.option("--host", default=None,
              help="Interface to bind [default: 127.0.0.1]. The dashboard has no "
                   "authentication: only bind elsewhere behind something that has.")
@friendly
def dashboard_cmd(storage: str | None, artifacts: Path | None, port: int,
                  host: str | None) -> None:
    """Serve optuna-dashboard on the storage (loopback only unless --host is given).

    The dashboard runs inside this process, so the storage URL (and any password in it) is
    on no command line; give a password through $MNIST_SEARCH_STORAGE or ~/.pgpass.
    """
    from ..results.dashboard import Dashboard
    from ..search.artifacts import artifact_dir
    from ..storage.connect import make_storage

    url = use_storage(storage)
    host = "127.0.0.1" if host is None else host  # elsewhere: Dashboard warns
    store = make_storage(url, create=False)  # a mistyped file name is an error, not a new file
    try:  # the trials' model files, so the dashboard lists (and serves) them
        folder: Path | None = artifact_dir(url, artifacts)
    except UsageError:
        folder = None
    if folder is None or not folder.is_dir():
        log.info("no model folder for this storage: the dashboard will not list models")
        folder = None
    dash = Dashboard(store, host, port, folder)
    click.echo(f"optuna-dashboard on {dash.url} (Ctrl-C to stop)", err=True)
    dash.serve_forever()
