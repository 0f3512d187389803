"""The study commands of `mnist-search`: run, studies, show, best, export, report, reap,
dashboard. Thin wrappers over study/results/report; registered on the `cli` group."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from .cli import _STORAGE_URL, INTERRUPTED, RUNTIME, UserError, _fail, cli, friendly

log = logging.getLogger("mnist_search")

storage_option = click.option(
    "--storage", default=None, metavar="URL",
    help="Optuna storage URL [default: $MNIST_SEARCH_STORAGE or sqlite:///mnist_search.db].")


def _use_storage(storage: str | None) -> str:
    from .storage import resolve_url

    url = resolve_url(storage)
    _STORAGE_URL[0] = url
    ctx = click.get_current_context(silent=True)
    if ctx is not None and (ctx.find_root().obj or {}).get("quiet"):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    return url


def _check_device(device: str) -> None:
    from .config import RULES

    if not RULES["device"][0](device):
        raise UserError(f"--device {device!r} is not known: expected {RULES['device'][1]}")
    if device.startswith("cuda") or device == "mps":
        from .train import resolve_device

        try:
            resolve_device(device)
        except ValueError as exc:
            raise UserError(f"--device: {exc}") from None


def _sigterm_as_interrupt(signum: int, _frame: Any) -> None:
    # SIGTERM (kill, a scheduler's stop) gets the same clean stop as Ctrl-C.
    raise KeyboardInterrupt(f"signal {signum}")


@cli.command("run")
@click.argument("study_file", type=click.Path(path_type=Path))
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="Finished trials the study should hold in total [default: the file's].")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes; CPU threads are split between them.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds after which no new trial starts.")
@storage_option
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Study seed for a new study [default: the file's].")
@click.option("--population", type=click.IntRange(min=1), default=16, show_default=True,
              help="Most trials a worker claims at once; same-shape ones train stacked "
                   "(the sampler is asked for at most 8 at a time).")
@click.option("--replicates", type=click.IntRange(min=1), default=None,
              help="Run each reference trial with K seeds [default: the file's, or 1].")
@click.option("--force", is_flag=True, help="Resume even if the study file changed.")
@click.option("--heartbeat", type=click.IntRange(min=0), default=None,
              help="Heartbeat interval in seconds (grace = 3x; 0 = off) [default: 10].")
@click.pass_context
@friendly
def run_cmd(ctx: click.Context, study_file: Path, trials: int | None, workers: int,
            timeout: float | None, storage: str | None, device: str, seed: int | None,
            population: int, replicates: int | None, force: bool,
            heartbeat: int | None) -> None:
    """Create or resume the study in STUDY_FILE and run it to --trials finished trials.

    \b
    Example:
      mnist-search run studies/notebook.toml --workers 2
    """
    import signal

    from .study import run_study

    url = _use_storage(storage)
    _check_device(device)
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    quiet = ctx.find_root().obj.get("quiet", False)
    summary = run_study(study_file, trials=trials, workers=workers, timeout=timeout,
                        storage=url, device=device, seed=seed, force=force,
                        progress=False if quiet else None, heartbeat=heartbeat,
                        replicates=replicates, population=population)
    c = summary.counts
    best = "-" if summary.best_value is None else f"{summary.best_value:.2f}"
    click.echo(f"{summary.study_name}: {c['done']}/{summary.target} trials finished "
               f"({c['complete']} complete, {c['failed']} failed, {c['running']} running), "
               f"best {best}, {summary.seconds:.1f} s")
    if summary.interrupted:
        _fail("interrupted; finished trials are kept, the interrupted ones are FAIL "
              "(run again to resume)", INTERRUPTED)
    if summary.worker_errors:
        _fail(summary.worker_errors[0] + (f" (and {len(summary.worker_errors) - 1} more)"
                                           if len(summary.worker_errors) > 1 else ""), RUNTIME)


@cli.command("studies")
@storage_option
@friendly
def studies_cmd(storage: str | None) -> None:
    """List the studies in the storage."""
    import optuna

    from .results import table
    from .storage import make_storage

    url = _use_storage(storage)
    store = make_storage(url, create=False)
    items = []
    for s in optuna.get_all_study_summaries(storage=store):
        best = s.best_trial.value if s.best_trial is not None else None
        items.append({"name": s.study_name, "trials": s.n_trials,
                      "direction": s.direction.name.lower(), "best": best})
    click.echo(table(items, ("name", "trials", "direction", "best")))


def _warn_test_selection(study: Any) -> None:
    if study.user_attrs.get("selection_on_test"):
        log.warning("this study selected on test accuracy: its best value is optimistic; "
                    "use objective = 'val_accuracy' with fixed.val_size to keep test unseen")


@cli.command("show")
@click.argument("study")
@storage_option
@click.option("--top", type=click.IntRange(min=1), default=None, help="Best K finished trials.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True)
@click.option("--by-label", is_flag=True,
              help="One row per reference label: n, mean, std and 95% interval over replicates.")
@friendly
def show_cmd(study: str, storage: str | None, top: int | None, fmt: str,
             by_label: bool) -> None:
    """Trials of STUDY: label, params, metric, test and notebook accuracy, state, seconds."""
    from .results import compact, load_study, top_rows

    _use_storage(storage)
    st = load_study(study, storage)
    if by_label:
        from .report import collect, label_table

        order = list(st.user_attrs.get("references", {}))
        _emit(label_table(collect(st), order), fmt,
              ("label", "n", "mean", "std", "ci95", "notebook"))
    else:
        _emit([compact(r) for r in top_rows(st, top)], fmt)
    _warn_test_selection(st)


def _emit(items: list[dict[str, Any]], fmt: str, columns: tuple[str, ...] | None = None) -> None:
    from .results import SHOW_COLUMNS, table

    if fmt == "json":
        click.echo(json.dumps(items, indent=1, default=str))
    elif fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        cols = list(dict.fromkeys(k for r in items for k in r))
        writer = csv.DictWriter(buf, fieldnames=cols)
        writer.writeheader()
        writer.writerows(items)
        click.echo(buf.getvalue(), nl=False)
    else:
        click.echo(table(items, columns or SHOW_COLUMNS) if items else "(no trials)")


@cli.command("best")
@click.argument("study")
@storage_option
@friendly
def best_cmd(study: str, storage: str | None) -> None:
    """The best finished trial of STUDY, with everything needed to re-run it."""
    from .results import load_study, top_rows

    _use_storage(storage)
    st = load_study(study, storage)
    best = top_rows(st, 1)
    if not best:
        raise UserError(f"study {study!r} has no finished trial yet")
    click.echo(json.dumps({k: v for k, v in best[0].items() if v is not None}, indent=1,
                          default=str))
    _warn_test_selection(st)


@cli.command("export")
@click.argument("study")
@storage_option
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv",
              show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="File to write (written whole or not at all).")
@friendly
def export_cmd(study: str, storage: str | None, fmt: str, output: Path) -> None:
    """Every trial of STUDY, flattened: params, user attrs, per-epoch values."""
    import os
    import tempfile

    from .results import load_results

    _use_storage(storage)
    frame = load_results(study, storage)
    if not output.parent.exists():
        raise UserError(f"-o {output}: directory {output.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.")
    os.close(fd)
    try:
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_json(tmp, orient="records", indent=1)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    click.echo(f"wrote {len(frame)} trials to {output}")


@cli.command("report")
@click.argument("study")
@storage_option
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the report and its figures [default: reports/STUDY].")
@click.option("--format", "fmt", type=click.Choice(["html", "md"]), default="html",
              show_default=True, help="html embeds the figures; md links them.")
@click.pass_context
@friendly
def report_cmd(ctx: click.Context, study: str, storage: str | None, output: Path | None,
               fmt: str) -> None:
    """Figures and a self-contained report of STUDY (works while it is still running)."""
    from .report import write_report
    from .results import load_study

    _use_storage(storage)
    st = load_study(study, storage)
    out = output or Path("reports") / study
    quiet = ctx.find_root().obj.get("quiet", False)
    show = sys.stderr.isatty() and not quiet

    def progress(name: str) -> None:
        if show:
            click.echo(f"  figure {name}", err=True)

    path = write_report(st, out, fmt, progress)
    click.echo(str(path))


@cli.command("reap")
@click.argument("study")
@storage_option
@click.option("--older-than", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="S", help="Also fail RUNNING trials without heartbeats started more than "
              "S seconds ago (only when no live worker runs trials that long).")
@friendly
def reap_cmd(study: str, storage: str | None, older_than: float | None) -> None:
    """Fail trials left RUNNING by dead workers; re-enqueue their labels.

    Trials with heartbeats are stale after 3x their heartbeat interval (or --older-than).
    """
    from .reap import reap
    from .results import load_study

    url = _use_storage(storage)
    load_study(study, url)  # a clear error for an unknown name
    report = reap(study, url, older_than)
    click.echo(f"{study}: failed {len(report.failed)} stale trials {list(report.failed)}, "
               f"re-enqueued {len(report.requeued)}, {len(report.left_running)} still running")


@cli.command("dashboard")
@storage_option
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--host", default=None,
              help="Interface to bind [default: 127.0.0.1]. The dashboard has no "
                   "authentication: only bind elsewhere behind something that has.")
def dashboard_cmd(storage: str | None, port: int, host: str | None) -> None:
    """Start optuna-dashboard on the storage (loopback only unless --host is given)."""
    import os
    import shutil

    from .storage import resolve_url

    url = resolve_url(storage)
    if host is None:
        host = "127.0.0.1"
    else:
        log.warning("binding %s: optuna-dashboard has no authentication; anyone who can "
                    "reach this port can change or delete studies", host)
    exe = Path(sys.executable).with_name("optuna-dashboard")
    exe_path = str(exe) if exe.exists() else shutil.which("optuna-dashboard")
    if exe_path is None:
        _fail("optuna-dashboard is not installed (pip install 'optuna-dashboard>=0.20')",
              RUNTIME)
    click.echo(f"optuna-dashboard on http://{host}:{port}/ (Ctrl-C to stop)", err=True)
    os.execv(exe_path, [exe_path, url, "--host", host, "--port", str(port)])


