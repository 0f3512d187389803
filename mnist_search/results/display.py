"""A study's results for a notebook: the per-label summary as a table, the report's figures
inline, and optuna-dashboard in the background. Each shows itself in Jupyter
(`_repr_html_`) and prints as plain text elsewhere; the CLI's show, report and dashboard
commands are the same code.
"""

from __future__ import annotations

import base64
import html
import tempfile
from dataclasses import dataclass
from pathlib import Path

import optuna

from ..search.summary import answer
from ..tables import Table
from .dashboard import Dashboard
from .report import build, html_report, write_report
from .rows import load_study

__all__ = ["FigureView", "ReportView", "dashboard", "report", "summary"]

def _study(study: optuna.Study | str, storage: str | None) -> optuna.Study:
    return study if isinstance(study, optuna.Study) else load_study(study, storage)


def summary(study: optuna.Study | str, storage: str | None = None, by: str | None = None
            ) -> Table:
    """Per reference label where the study has labels, else per config (or as `by` says:
    "label" or "config"), over its replicates: n, the objective's mean, std, the 95%
    interval's half-width and the notebook's value, as `show --by-label` / `--by-config`
    print them; the caption says which config is best, only with its interval, and whether
    it beats the runner-up and the baseline beyond seed noise. `.to_pandas()` gives the
    rows as a DataFrame."""
    st = _study(study, storage)
    found = answer(st, by)
    return Table(found.rows(), found.columns,
                 f"{st.study_name}: {found.objective} per {found.by}, mean of its replicates "
                 f"with a 95% interval (+/- ci95); {found.verdict}")


@dataclass(frozen=True)
class FigureView:
    """One figure of a report: its title, its sentences, and the PNG."""

    title: str
    text: str
    png: bytes

    def _repr_png_(self) -> bytes:
        return self.png

    def _repr_html_(self) -> str:
        data = base64.b64encode(self.png).decode()
        return (f"<h3>{html.escape(self.title)}</h3><img alt='{html.escape(self.title)}' "
                f"src='data:image/png;base64,{data}'><p>{html.escape(self.text)}</p>")

    def __repr__(self) -> str:
        return f"{self.title}: {self.text}"


@dataclass(frozen=True)
class ReportView:
    """A study's report in memory: its figures (FigureView), what was skipped and why, the
    self-contained HTML, and the folder it was also written to (if one was given)."""

    figures: tuple[FigureView, ...]
    skipped: tuple[str, ...]
    html: str
    written: Path | None = None

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        lines = [repr(f) for f in self.figures] + [f"skipped: {s}" for s in self.skipped]
        return "\n".join(lines + ([f"written: {self.written}"] if self.written else []))


def report(study: optuna.Study | str, out_dir: str | Path | None = None,
           storage: str | None = None) -> ReportView:
    """The report of `study` (what `mnist-search report` writes) for inline display; with
    `out_dir`, its files are also written there, as the command writes them."""
    st = _study(study, storage)
    with tempfile.TemporaryDirectory(prefix="mnist-search-report-") as tmp:
        built = build(st, Path(tmp))
        figures = tuple(FigureView(f.title, f.text, (Path(tmp) / f.name).read_bytes())
                        for f in built.figures)
        page = html_report(st, built, Path(tmp))
    written = None if out_dir is None else write_report(st, Path(out_dir)).parent
    return ReportView(figures, tuple(built.skipped), page, written)


def dashboard(storage: str | None = None, *, port: int = 0, host: str = "127.0.0.1",
              artifacts: str | Path | None = None) -> Dashboard:
    """optuna-dashboard on `storage`, served in the background on a free port (`port=0`):
    the handle's `url` opens it and `stop()` ends it. Returns at once (the command blocks)."""
    from ..search.artifacts import artifact_dir
    from ..storage.connect import make_storage, resolve_url

    url = resolve_url(storage)
    folder: Path | None
    try:
        folder = artifact_dir(url, Path(artifacts) if artifacts else None)
    except Exception:  # noqa: BLE001 - no model folder for this storage: none listed
        folder = None
    return Dashboard(make_storage(url, create=False), host, port,
                     folder if folder is not None and folder.is_dir() else None).start()
