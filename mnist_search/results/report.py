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
from ..search.confirm import verdict
from ..search.summary import answer, finished_trials
from .confirmed import confirmed_figure, confirmed_of
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


# In a report's folder: "SHA-256  name" for each file that report wrote. A file is this
# package's to replace or remove only while its content still has the digest listed, so a
# manifest that arrived with a clone or an archive proves nothing about the files beside it.
_MANIFEST = ".mnist-search-report"
_STALE_OK = (".png",)  # what a newer report may remove: figures it no longer draws


def write_report(study: optuna.Study, out_dir: Path, fmt: str = "html",
                 progress: Callable[[str], None] | None = None) -> Path:
    """Build into a temporary folder, then move the report into out_dir.

    A new out_dir is moved into place whole. An existing one only gains files: a file there
    that no earlier report wrote (as its digest shows) is never replaced (UsageError, before
    anything is moved), and what is removed is only an earlier report's own figures that
    this one no longer has, unchanged since that report wrote them.
    """
    if out_dir.is_symlink() and not out_dir.exists():
        raise UsageError(f"-o {out_dir}: is a link to nothing; give a folder for the report "
                         "(nothing was written)")
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
        written = {name: _digest(tmp / name) for name in names}
        tmp.chmod(0o755)  # mkdtemp makes it private; a report is meant to be shared
        if old is None:
            _write_manifest(tmp, written)
            os.replace(tmp, out_dir)
        else:
            _merge(tmp, out_dir, written, old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)  # only the staging folder this call made
    return out_dir / f"report.{fmt}"


def _digest(path: Path) -> str:
    import hashlib

    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _write_manifest(folder: Path, files: dict[str, str]) -> None:
    (folder / _MANIFEST).write_text("".join(f"{d}  {n}\n" for n, d in sorted(files.items())),
                                    encoding="utf-8")


def _owned(out_dir: Path) -> dict[str, str]:
    """The files of out_dir an earlier report wrote and nobody changed since: listed in its
    manifest by a plain name, still a regular file (no link), still of the listed digest."""
    manifest = out_dir / _MANIFEST
    if not manifest.is_file() or manifest.is_symlink():
        return {}
    owned: dict[str, str] = {}
    for line in manifest.read_text(encoding="utf-8", errors="replace").splitlines():
        digest, _, name = line.partition("  ")
        path = out_dir / name
        if (len(digest) != 64 or not name or name in (".", "..") or "/" in name
                or "\\" in name or name.startswith(".") or path.is_symlink()
                or not path.is_file()):
            continue
        if _digest(path) == digest:
            owned[name] = digest
    return owned


def _check_out_dir(out_dir: Path, fmt: str) -> dict[str, str] | None:
    """None for a folder that does not exist yet; else the files an earlier report wrote
    there. Refuses a path that is not a folder, and a report file no report wrote."""
    if not out_dir.exists() and not out_dir.is_symlink():
        return None
    if not out_dir.is_dir():
        raise UsageError(f"-o {out_dir}: exists and is not a folder; give a folder for the "
                         "report")
    old = _owned(out_dir)
    _refuse_foreign(out_dir, [f"report.{fmt}"], old)
    return old


def _refuse_foreign(out_dir: Path, names: list[str], old: dict[str, str]) -> None:
    foreign = [n for n in names if n not in old and os.path.lexists(out_dir / n)]
    if foreign:
        raise UsageError(f"-o {out_dir}: would replace {', '.join(foreign[:5])}, which no "
                         "report wrote; give an empty or new folder (nothing was written)")


def _merge(tmp: Path, out_dir: Path, written: dict[str, str], old: dict[str, str]) -> None:
    """Each file moved in atomically (os.replace); the manifest last. An earlier report's
    other files stay listed (an md report beside an html one keeps report.html)."""
    _refuse_foreign(out_dir, list(written), old)
    for name in written:
        os.replace(tmp / name, out_dir / name)
    kept = {}
    for name, digest in old.items():
        if name in written:
            continue
        if name.endswith(_STALE_OK):
            (out_dir / name).unlink()  # a figure an earlier report drew, unchanged since
        else:
            kept[name] = digest
    _write_manifest(tmp, {**kept, **written})
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
    if len(study.directions) == 1:
        found = answer(study)
        lines.append(f"{found.verdict}.")
        confirmed = confirmed_of(study)
        if confirmed:  # the report's own confirm section says the same, from the same test
            line = verdict(confirmed, study.directions[0].name == "MAXIMIZE")
            lines.append(f"Confirmed with fresh seeds: {line}.")
    if study.user_attrs.get("selection_on_test"):
        lines.append("This study selected on test accuracy, so its best value is optimistic.")
    lines += [f"Figure skipped ({reason})." for reason in built.skipped]
    return lines


def _markdown(study: optuna.Study, built: Built) -> str:
    """The Markdown report. Names, labels and descriptions come from a storage others may
    write: escaped, so a `<script>` in them is text where the Markdown is rendered."""
    def esc(text: object) -> str:
        return html.escape(str(text), quote=False)

    name = study.study_name.replace("`", "'")
    parts = [f"# Study `{name}`", "", esc(study.user_attrs.get("description", "")), "",
             *map(esc, _summary_lines(study, built)), ""]
    for fig in built.figures:
        parts += [f"## {esc(fig.title)}", "", f"![{esc(fig.title)}]({fig.name})", "",
                  esc(fig.text), ""]
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
