"""The commands that read results: studies, show, best, export, report."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import UsageError
from .common import echo_json, friendly, quiet, storage_option, use_storage

if TYPE_CHECKING:
    import optuna

__all__ = ["best_cmd", "export_cmd", "report_cmd", "show_cmd", "studies_cmd"]

log = logging.getLogger("mnist_search")


@click.command("studies")
@storage_option
@friendly
def studies_cmd(storage: str | None) -> None:
    """List the studies in the storage."""
    import optuna

    from ..results.rows import table
    from ..storage.connect import make_storage

    url = use_storage(storage)
    store = make_storage(url, create=False)
    items = []
    for s in optuna.get_all_study_summaries(storage=store):
        multi = len(s.directions) > 1
        best = s.best_trial.value if s.best_trial is not None and not multi else None
        items.append({"name": s.study_name, "trials": s.n_trials,
                      "direction": "/".join(d.name.lower() for d in s.directions),
                      "best": "(Pareto front)" if multi else best})
    click.echo(table(items, ("name", "trials", "direction", "best")))


def _warn_test_selection(study: optuna.Study) -> None:
    if study.user_attrs.get("selection_on_test"):
        log.warning("this study selected on test accuracy: its best value is optimistic; "
                    "use objective = 'val_accuracy' with fixed.val_size to keep test unseen")


@click.command("show")
@click.argument("study")
@storage_option
@click.option("--top", type=click.IntRange(min=1), default=None, help="Best K finished trials.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True)
@click.option("--by-label", is_flag=True,
              help="One row per reference label: n, mean, std and 95% interval over replicates.")
@click.option("--by-config", is_flag=True,
              help="One row per distinct config: the values that vary, n, mean, std and 95% "
                   "interval over its replicates, and the notebook's value.")
@friendly
def show_cmd(study: str, storage: str | None, top: int | None, fmt: str,
             by_label: bool, by_config: bool) -> None:
    """Trials of STUDY: label, params, the objective, test and notebook accuracy, state,
    seconds; then which config is best, with its interval and Welch's t-test against the
    runner-up and the baseline (--by-label / --by-config: one row per label or config)."""
    from ..results.rows import compact, load_study, top_rows
    from ..search.summary import answer

    if by_label and by_config:
        raise UsageError("--by-label and --by-config: give one of them")
    use_storage(storage)
    st = load_study(study, storage)
    multi = len(st.directions) > 1
    found = None if multi else answer(st, "label" if by_label else "config" if by_config
                                      else None)
    if (by_label or by_config) and found is not None:
        if fmt == "json":
            echo_json(found.to_json(), indent=1)
        else:
            _emit(found.rows(), fmt, found.columns)
    elif by_label or by_config:
        raise UsageError(f"study {study!r} has several objectives: per-config means need one "
                         "(see: mnist-search show STUDY for its Pareto front)")
    elif multi and top is None:
        from ..results.rows import pareto_rows

        front = pareto_rows(st)
        log.info("%s has %d objectives: its Pareto front, %d of %d trials (all of them: "
                 "export)", study, len(st.directions), len(front), len(st.trials))
        _emit([compact(r) for r in front], fmt, _columns(front))
    else:
        shown = [compact(r) for r in top_rows(st, top)]
        if fmt == "table":  # json and csv keep the key scripts read: "value"
            _emit(_named_value(shown, st), fmt, _value_columns(st))
        else:
            _emit(shown, fmt)
    if found is not None and not (fmt == "json" and (by_label or by_config)):
        if fmt == "table":
            click.echo(found.verdict)
        else:  # the rows on stdout stay machine-readable
            click.echo(found.verdict, err=True)
    _warn_test_selection(st)


def _objective_name(study: optuna.Study) -> str:
    return str(study.user_attrs.get("objective") or "value")


def _named_value(rows: list[dict[str, Any]], study: optuna.Study) -> list[dict[str, Any]]:
    """The value column under its objective's name ("value" says nothing of what it is):
    "test_accuracy", or "val_accuracy (objective)" where a recorded column of that name
    exists too."""
    name = _value_header(study)
    return [{(name if k == "value" else k): v for k, v in r.items()} for r in rows]


def _value_header(study: optuna.Study) -> str:
    name = _objective_name(study)
    return f"{name} (objective)" if name in ("test_accuracy", "val_accuracy") else name


def _value_columns(study: optuna.Study) -> tuple[str, ...]:
    from ..results.rows import SHOW_COLUMNS

    return tuple(_value_header(study) if c == "value" else c for c in SHOW_COLUMNS)


def _columns(front: list[dict[str, Any]]) -> tuple[str, ...]:
    from ..results.rows import SHOW_COLUMNS

    values = tuple(k for k in (front[0] if front else {}) if k.startswith("value_")
                   and "epoch" not in k)
    return tuple(c for c in SHOW_COLUMNS if c != "value") + values


def _emit(items: list[dict[str, Any]], fmt: str, columns: tuple[str, ...] | None = None) -> None:
    from ..results.rows import SHOW_COLUMNS, table

    if fmt == "json":
        echo_json(items, indent=1)
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


@click.command("best")
@click.argument("study")
@storage_option
@friendly
def best_cmd(study: str, storage: str | None) -> None:
    """The best finished trial of STUDY (the Pareto front, for several objectives), with
    everything needed to re-run it."""
    from ..results.rows import load_study, pareto_rows, top_rows

    use_storage(storage)
    st = load_study(study, storage)
    best = pareto_rows(st) if len(st.directions) > 1 else top_rows(st, 1)
    if not best:
        raise UsageError(f"study {study!r} has no finished trial yet")
    clean = [{k: v for k, v in r.items() if v is not None} for r in best]
    echo_json(clean if len(st.directions) > 1 else clean[0], indent=1)
    if len(st.directions) == 1:
        from ..search.summary import answer

        # stdout stays the trial's JSON; whether it is a winner or a lucky seed goes beside
        click.echo(answer(st).verdict, err=True)
    _warn_test_selection(st)


@click.command("export")
@click.argument("study")
@storage_option
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv",
              show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="File to write (written whole or not at all).")
@click.option("--force", is_flag=True,
              help="Replace an existing file at -o (never a database, a study file, a device "
                   "or the storage's models).")
@friendly
def export_cmd(study: str, storage: str | None, fmt: str, output: Path, force: bool) -> None:
    """Every trial of STUDY, flattened: params, user attrs, per-epoch values."""
    from ..files import check_output, replacing
    from ..results.rows import load_results
    from ..search.artifacts import storage_files

    url = use_storage(storage)
    check_output(output, force=force, keep=storage_files(url))
    frame = load_results(study, url)
    with replacing(output) as tmp:
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_json(tmp, orient="records", indent=1)
    click.echo(f"wrote {len(frame)} trials to {output}")


@click.command("report")
@click.argument("study")
@storage_option
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the report and its figures [default: reports/STUDY].")
@click.option("--format", "fmt", type=click.Choice(["html", "md"]), default="html",
              show_default=True, help="html embeds the figures; md links them.")
@friendly
def report_cmd(study: str, storage: str | None, output: Path | None,
               fmt: str) -> None:
    """Figures and a self-contained report of STUDY (works while it is still running)."""
    import matplotlib

    from ..results.report import write_report
    from ..results.rows import load_study

    use_storage(storage)
    st = load_study(study, storage)
    out = output or Path("reports") / study
    matplotlib.use("Agg")  # this process only writes files; a library caller keeps theirs
    show = sys.stderr.isatty() and not quiet()

    def progress(name: str) -> None:
        if show:
            click.echo(f"  figure {name}", err=True)

    path = write_report(st, out, fmt, progress)
    click.echo(str(path))
