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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from .stats import summarize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    """One finished trial, in the terms the figures need."""

    number: int
    label: str | None  # base label: replicates "x#2" count as "x"
    group: str
    config: dict[str, Any]
    test_accuracy: float
    train_loss: list[float]
    small_fraction: float | None
    parameters: int | None
    notebook_accuracy: float | None = None
    notebook_loss: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Figure:
    name: str  # file name (png)
    title: str
    text: str  # sentences computed from the numbers


def collect(study: optuna.Study) -> list[Run]:
    refs = study.user_attrs.get("references", {})
    runs = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        a = t.user_attrs
        if "config" not in a or a.get("test_accuracy") is None:
            continue
        label = a.get("label")
        base = label.split("#")[0] if label else None
        ref = refs.get(base, {}) if base else {}
        runs.append(Run(t.number, base, a.get("group") or ref.get("group") or "", a["config"],
                        float(a["test_accuracy"]), list(a.get("train_loss", [])),
                        a.get("penalised_layer_small_fraction"), a.get("parameters"),
                        ref.get("notebook_accuracy"), list(ref.get("notebook_loss") or [])))
    return runs


def by_label(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs grouped by base label (replicates together), in trial order."""
    out: dict[str, list[Run]] = {}
    for r in runs:
        if r.label:
            out.setdefault(r.label, []).append(r)
    return out


def label_table(runs: list[Run], order: list[str] | None = None) -> list[dict[str, Any]]:
    """Per label: n, mean, std, 95% interval of test accuracy, and the notebook's figure.

    Rows follow `order` (the study file's reference order) where given.
    """
    rows = []
    groups = by_label(runs)
    rank = {label: i for i, label in enumerate(order or [])}
    for label in sorted(groups, key=lambda k: rank.get(k, len(rank))):
        group = groups[label]
        s = summarize([r.test_accuracy for r in group])
        rows.append({"label": label, "n": s.n, "mean": round(s.mean, 2),
                     "std": None if s.std is None else round(s.std, 2),
                     "ci95": None if s.ci95 is None else round(s.ci95, 2),
                     "notebook": group[0].notebook_accuracy})
    return rows


def build(study: optuna.Study, out_dir: Path,
          progress: Callable[[str], None] | None = None) -> list[Figure]:
    """Write every figure the study's data supports into out_dir; return them in order."""
    from . import figures  # matplotlib is imported only when figures are drawn

    runs = collect(study)
    made: list[Figure] = []
    per_runs = [figures.loss_curves, figures.accuracy_by_label, figures.momentum,
                figures.regularization, figures.capacity]
    makers: list[Callable[[], Figure | None]] = [lambda f=f: f(runs, out_dir) for f in per_runs]
    makers += figures.optuna_figures(study, out_dir)
    for make in makers:
        fig = make()
        if fig is not None:
            made.append(fig)
            if progress:
                progress(fig.name)
    return made


def write_report(study: optuna.Study, out_dir: Path, fmt: str = "html",
                 progress: Callable[[str], None] | None = None) -> Path:
    """Build into a temporary directory beside out_dir, then move it into place whole."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        made = build(study, tmp, progress)
        body = _markdown(study, made) if fmt == "md" else _html(study, made, tmp)
        (tmp / f"report.{fmt}").write_text(body, encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp makes it private; a report is meant to be shared
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir / f"report.{fmt}"


def _summary_lines(study: optuna.Study) -> list[str]:
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
    lines = [f"{len(trials)} trials: {counts}."]
    if study.user_attrs.get("selection_on_test"):
        lines.append("This study selected on test accuracy, so its best value is optimistic.")
    return lines


def _markdown(study: optuna.Study, made: list[Figure]) -> str:
    parts = [f"# Study `{study.study_name}`", "", study.user_attrs.get("description", ""), "",
             *_summary_lines(study), ""]
    for fig in made:
        parts += [f"## {fig.title}", "", f"![{fig.title}]({fig.name})", "", fig.text, ""]
    return "\n".join(parts)


def _html(study: optuna.Study, made: list[Figure], folder: Path) -> str:
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>{esc(study.study_name)}</title><style>body{{font-family:sans-serif;"
             "max-width:1000px;margin:2em auto;color:#222}img{max-width:100%}"
             "p.note{color:#555}</style></head><body>",
             f"<h1>Study {esc(study.study_name)}</h1>",
             f"<p>{esc(study.user_attrs.get('description', ''))}</p>"]
    parts += [f"<p class='note'>{esc(line)}</p>" for line in _summary_lines(study)]
    for fig in made:
        data = base64.b64encode((folder / fig.name).read_bytes()).decode()
        parts += [f"<h2>{esc(fig.title)}</h2>",
                  f"<img alt='{esc(fig.title)}' data-file='{esc(fig.name)}' "
                  f"src='data:image/png;base64,{data}'>", f"<p>{esc(fig.text)}</p>"]
    parts.append("</body></html>")
    return "\n".join(parts)
