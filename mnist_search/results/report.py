"""`mnist-search report`: figures and a self-contained HTML or Markdown report of a study.

Reads only finished trials, so it works on a study that is still running or has failures.
Every figure gets one or two sentences computed from its numbers; nothing is hard-coded.
"""

from __future__ import annotations

import base64
import html
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna

from ..errors import UsageError
from ..search.summary import finished_trials
from .confirmed import confirmed_figure
from .figures import ReportFigure, trial_figures
from .optuna_plots import optuna_figures

__all__ = ["Built", "build", "html_report", "write_report"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Built:
    figures: list[ReportFigure]
    skipped: list[str]  # "title: why", for figures that failed to draw


def build(study: optuna.Study, out_dir: Path,
          progress: Callable[[str], None] | None = None) -> Built:
    """Write every figure the study's data supports into out_dir, in order. A figure that
    fails to draw costs only itself: it is listed with the reason, and the rest go on."""
    made: list[ReportFigure] = []
    skipped: list[str] = []
    makers = trial_figures(finished_trials(study), out_dir) + optuna_figures(study, out_dir) + \
        [("The search's best, confirmed", lambda: confirmed_figure(study, out_dir))]
    for title, make in makers:
        try:
            fig = make()
        except Exception as exc:  # noqa: BLE001 - one figure's bug must not lose the report
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            skipped.append(f"{title}: {reason}")
            log.warning("figure %r skipped: %s", title, reason)
            continue
        if fig is not None:
            made.append(fig)
            if progress:
                progress(fig.name)
    return Built(made, skipped)


_MANIFEST = ".mnist-search-report"  # in a report's folder: the names that report wrote


def write_report(study: optuna.Study, out_dir: Path, fmt: str = "html",
                 progress: Callable[[str], None] | None = None) -> Path:
    """Build into a temporary folder, then move the report into out_dir.

    A new out_dir is moved into place whole. An existing one only gains files: a file there
    that no earlier report wrote is never replaced (UsageError, before anything is moved),
    and what is removed is only an earlier report's own figures that this one no longer has.
    """
    out_dir = out_dir.resolve()  # `-o .` names a real folder, with a real parent
    old = _check_out_dir(out_dir, fmt)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir if old is not None else out_dir.parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.report-", dir=staging))
    try:
        built = build(study, tmp, progress)
        body = _markdown(study, built) if fmt == "md" else _html(study, built, tmp)
        (tmp / f"report.{fmt}").write_text(body, encoding="utf-8")
        names = sorted(p.name for p in tmp.iterdir())
        (tmp / _MANIFEST).write_text("\n".join(names) + "\n", encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp makes it private; a report is meant to be shared
        if old is None:
            os.replace(tmp, out_dir)
        else:
            _merge(tmp, out_dir, names, old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)  # only the staging folder this call made
    return out_dir / f"report.{fmt}"


def _check_out_dir(out_dir: Path, fmt: str) -> set[str] | None:
    """None for a folder that does not exist yet; else the names an earlier report wrote
    there. Refuses a path that is not a folder, and a report file no report wrote."""
    if not out_dir.exists() and not out_dir.is_symlink():
        return None
    if not out_dir.is_dir():
        raise UsageError(f"-o {out_dir}: exists and is not a folder; give a folder for the "
                         "report")
    manifest = out_dir / _MANIFEST
    old = set(manifest.read_text(encoding="utf-8").split()) if manifest.is_file() else set()
    _refuse_foreign(out_dir, [f"report.{fmt}"], old)
    return old


def _refuse_foreign(out_dir: Path, names: list[str], old: set[str]) -> None:
    foreign = [n for n in names if n not in old and (out_dir / n).exists()]
    if foreign:
        raise UsageError(f"-o {out_dir}: would replace {', '.join(foreign[:5])}, which no "
                         "report wrote; give an empty or new folder (nothing was written)")


def _merge(tmp: Path, out_dir: Path, names: list[str], old: set[str]) -> None:
    """Each file moved in atomically (os.replace); the manifest last."""
    _refuse_foreign(out_dir, names, old)
    for name in names:
        os.replace(tmp / name, out_dir / name)
    for name in sorted(old - set(names) - {_MANIFEST}):
        stale = out_dir / name
        if stale.is_file() and not stale.is_symlink() and "/" not in name:
            stale.unlink()  # a figure of an earlier report, listed in its manifest
    os.replace(tmp / _MANIFEST, out_dir / _MANIFEST)


def _summary_lines(study: optuna.Study, built: Built) -> list[str]:
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
    lines = [f"{len(trials)} trials: {counts}."]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    infeasible = [t.number for t in complete if any(v > 0 for v in t.constraints.values())]
    if any(t.constraints for t in complete):
        lines.append(f"{len(infeasible)} of {len(complete)} complete trials are over the "
                     "study's [constraints] (infeasible); the best value is the best "
                     "feasible one" + (f"; infeasible: {', '.join(map(str, infeasible[:20]))}."
                                       if infeasible else "."))
    if study.user_attrs.get("selection_on_test"):
        lines.append("This study selected on test accuracy, so its best value is optimistic.")
    lines += [f"Figure skipped ({reason})." for reason in built.skipped]
    return lines


def _markdown(study: optuna.Study, built: Built) -> str:
    parts = [f"# Study `{study.study_name}`", "", study.user_attrs.get("description", ""), "",
             *_summary_lines(study, built), ""]
    for fig in built.figures:
        parts += [f"## {fig.title}", "", f"![{fig.title}]({fig.name})", "", fig.text, ""]
    return "\n".join(parts)


def html_report(study: optuna.Study, built: Built, folder: Path) -> str:
    """The self-contained HTML of a built report (its figures read from `folder`)."""
    return _html(study, built, folder)


def _html(study: optuna.Study, built: Built, folder: Path) -> str:
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>{esc(study.study_name)}</title><style>body{{font-family:sans-serif;"
             "max-width:1000px;margin:2em auto;color:#222}img{max-width:100%}"
             "p.note{color:#555}</style></head><body>",
             f"<h1>Study {esc(study.study_name)}</h1>",
             f"<p>{esc(study.user_attrs.get('description', ''))}</p>"]
    parts += [f"<p class='note'>{esc(line)}</p>" for line in _summary_lines(study, built)]
    for fig in built.figures:
        data = base64.b64encode((folder / fig.name).read_bytes()).decode()
        parts += [f"<h2>{esc(fig.title)}</h2>",
                  f"<img alt='{esc(fig.title)}' data-file='{esc(fig.name)}' "
                  f"src='data:image/png;base64,{data}'>", f"<p>{esc(fig.text)}</p>"]
    parts.append("</body></html>")
    return "\n".join(parts)
