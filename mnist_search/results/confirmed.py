"""The report's figure of a confirmed search: each winner's single run beside its replicates.

Drawn when `mnist-search confirm` has stored replicates for the study ("<study>-confirm"):
per confirmed trial, the value the search recorded (one run, the one it was selected on)
and the mean and 95% interval of its fresh-seed replicates, so the winner's curse and the
seed noise are seen beside the search's own best.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..search.confirm import Confirmed, confirmed_of, verdict
from .figures import ReportFigure, new_figure, save_figure, style

if TYPE_CHECKING:
    import optuna

__all__ = ["confirmed_figure", "confirmed_of"]


def confirmed_figure(study: optuna.Study, out: Path) -> ReportFigure | None:
    confirmed = confirmed_of(study)
    if not confirmed:
        return None
    objective = str(study.user_attrs.get("objective", "objective"))
    with style():
        fig, axes = new_figure((8, 0.5 * len(confirmed) + 1.6))
        ax = axes[0, 0]
        for y, c in enumerate(confirmed):
            ax.plot(c.values, [y] * len(c.values), ".", color="0.6",
                    label="replicates" if y == 0 else None)
            ax.errorbar(c.summary.mean, y, xerr=c.summary.ci95 or 0, fmt="o", color="C0",
                        capsize=3, label="replicate mean, 95% interval" if y == 0 else None)
            ax.plot(c.recorded, y, "D", color="C3", ms=6,
                    label="the search's single run" if y == 0 else None)
        ax.set_yticks(range(len(confirmed)), [f"trial {c.trial}" for c in confirmed])
        ax.invert_yaxis()
        ax.set_xlabel(objective)
        ax.legend(fontsize=8, loc="best")
        save_figure(fig, out, "confirmed.png")
    return ReportFigure("confirmed.png", "The search's best, confirmed with fresh seeds",
                        _text(confirmed, objective, study.directions[0].name == "MAXIMIZE"))


def _text(confirmed: list[Confirmed], objective: str, maximize: bool) -> str:
    top, s = confirmed[0], confirmed[0].summary
    interval = "" if s.ci95 is None else f", 95% interval {s.low:.2f} to {s.high:.2f}"
    curse = (top.recorded - s.mean) * (1 if maximize else -1)
    text = (f"Trial {top.trial}, the search's best, recorded {top.recorded:.2f} {objective} "
            f"in its single run; {s.n} fresh seeds give {s.mean:.2f}{interval}: a winner's "
            f"curse of {curse:+.2f}.")
    if len(confirmed) > 1:
        line = verdict(confirmed, maximize)
        text += f" {line[0].upper()}{line[1:]}."
    return text
