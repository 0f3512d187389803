"""Optuna's own plots for a report (history, importances, slice, contour; the Pareto front
of a study with several objectives) and the sentences under them.

Optuna draws with pyplot and its ggplot style; each plot is drawn inside an rc_context and
closed once saved, so the user's pyplot state and style are left alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

from .figures import Maker, ReportFigure, new_figure, save_figure, style

if TYPE_CHECKING:
    import optuna

__all__ = ["optuna_figures", "pareto_front"]


def optuna_figures(study: optuna.Study, out: Path) -> list[Maker]:
    """Optuna's own plots for studies that searched (not for pure reference/grid studies).

    Optuna draws them with pyplot and switches to its ggplot style; the rc_context undoes the
    style and each figure is closed once saved, so the user's pyplot state is left alone.
    """
    import optuna
    import optuna.visualization.matplotlib as ovm

    if len(study.directions) > 1:  # one best value makes no sense: the front does
        return [("Pareto front", lambda: pareto_front(study, out))]
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"
                and "label" not in t.user_attrs and "grid_point" not in t.user_attrs]
    params = sorted({p for t in complete for p in t.params})
    if len(complete) < 3 or not params:
        return []

    def plot(name: str, title: str, fn: Callable[[], Any], text: Callable[[], str]
             ) -> Maker:
        def draw() -> ReportFigure:
            import matplotlib.pyplot as plt

            with matplotlib.rc_context(), warnings.catch_warnings():
                # Optuna marks its matplotlib plots experimental and warns of thin regimes in
                # its importances: the sentence under each figure says what holds instead
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                ax = fn()
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                try:
                    fig.set_size_inches(8, 5)
                    save_figure(fig, out, name)
                finally:
                    plt.close(fig)
                return ReportFigure(name, title, text())
        return title, draw

    best = study.best_trial
    top = params[:4]
    n_all = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    drawn = f"{len(complete)} sampled trials" + (
        f" of the {n_all} complete (labelled and grid trials are not drawn)"
        if n_all != len(complete) else "")
    makers = [
        plot("history.png", "Optimization history",
             lambda: ovm.plot_optimization_history(study),
             lambda: f"The highest single run, {best.value:.2f} (n = 1, one seed), came at "
                     f"trial {best.number} of {len(study.trials)}; whether it is a winner or "
                     "a kind seed is the summary's line above."),
        plot("importances.png", "Parameter importances",
             lambda: ovm.plot_param_importances(study), lambda: _importance_text(study)),
        plot("slice.png", "Slice plot", lambda: ovm.plot_slice(study, params=top),
             lambda: f"Each of the {drawn} is a point per parameter; the highest single "
                     f"run (trial {best.number}, {best.value:.2f}) has "
                     + ", ".join(f"{p} = {_fmt(best.params[p])}" for p in top
                                 if p in best.params) + "."),
    ]
    if len(params) >= 2:
        makers.append(plot("contour.png", "Contour of the two most important parameters",
                           lambda: ovm.plot_contour(study, params=_top2(study)),
                           lambda: f"The objective interpolated over {' and '.join(_top2(study))}"
                                   f" from the {drawn}; between them the "
                                   "surface is a guess."))
    return makers


def _top2(study: optuna.Study) -> list[str]:
    import optuna

    imp = optuna.importance.get_param_importances(study)
    return list(imp)[:2]


MIN_RANKED = 20  # complete trials below which importances are a hint, not a ranking


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _importance_text(study: optuna.Study) -> str:
    import optuna

    n = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    try:
        imp = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError):
        return f"Importances could not be computed from {n} complete trials."
    items = list(imp.items())
    text = (f"From {n} complete trials, the most important: {items[0][0]} ({items[0][1]:.0%} "
            "of the explained variance)"
            + (f", then {items[1][0]} ({items[1][1]:.0%})." if len(items) > 1 else "."))
    if n < MIN_RANKED:
        text += (f" {n} trials are too few to rank parameters (fewer than {MIN_RANKED}): "
                 "read the order as a hint, not a finding.")
    return text


def pareto_front(study: optuna.Study, out: Path) -> ReportFigure | None:
    """The first two objectives of every finished trial, the Pareto front joined up."""
    names = list(study.user_attrs.get("objectives") or
                 [f"objective {i}" for i in range(len(study.directions))])
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not done:
        return None
    front = sorted(study.best_trials, key=lambda t: t.values[1])
    with style():
        fig, axes = new_figure((7, 4.5))
        ax = axes[0, 0]
        ax.scatter([t.values[1] for t in done], [t.values[0] for t in done], s=14,
                   color="0.6", label="trials")
        ax.plot([t.values[1] for t in front], [t.values[0] for t in front], "o-",
                color="C3", ms=5, label="Pareto front")
        if names[1] in ("parameters", "train_seconds"):
            ax.set_xscale("log")
        ax.set(xlabel=names[1], ylabel=names[0])
        ax.legend()
        save_figure(fig, out, "pareto_front.png")
    return ReportFigure("pareto_front.png", "Pareto front", _pareto_text(front, names, len(done)))


def _pareto_text(front: list[optuna.trial.FrozenTrial], names: list[str], n: int) -> str:
    lo, hi = front[0], front[-1]

    def arch(t: optuna.trial.FrozenTrial) -> str:
        return str(t.user_attrs.get("architecture", f"trial {t.number}"))

    text = (f"The front holds {len(front)} of {n} finished trials. At the low end of "
            f"{names[1]}: {arch(lo)} ({lo.values[1]:,.6g} {names[1]}) at {lo.values[0]:.2f} "
            f"{names[0]}; at the high end: {arch(hi)} ({hi.values[1]:,.6g}) at "
            f"{hi.values[0]:.2f}.")
    if names[1] == "parameters" and hi.values[1] > lo.values[1] > 0:
        import math

        per_doubling = (hi.values[0] - lo.values[0]) / math.log2(hi.values[1] / lo.values[1])
        text += (f" Along the front each doubling of the parameters bought "
                 f"{per_doubling:.2f} points of {names[0]}.")
    return text
