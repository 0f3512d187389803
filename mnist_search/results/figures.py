"""The report's figures (matplotlib, in seaborn's whitegrid style as the notebook used) and
their sentences.

Each function takes the finished trials and an output folder, writes one PNG and returns a
ReportFigure with a caption computed from the plotted numbers, or None when the study has
no data for it. Figures are `matplotlib.figure.Figure` objects drawn under an rc_context, so
neither importing nor calling this module changes the user's backend or style. Optuna's own
plots are in optuna_plots.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from ..config import hidden_str
from ..search.summary import FinishedTrial, by_label
from ..stats import compare, summarize

__all__ = ["Maker", "ReportFigure", "new_figure", "save_figure", "style", "trial_figures"]

GROUP_ORDER = ("baseline", "regularization", "dropout", "layers", "width", "momentum",
               "momentum-sweep")


@dataclass(frozen=True)
class ReportFigure:
    name: str  # file name (png)
    title: str
    text: str  # sentences computed from the numbers


def _figure(name: str, title: str, text: str) -> ReportFigure:
    return ReportFigure(name, title, text)


@contextlib.contextmanager
def style() -> Iterator[None]:
    """seaborn's whitegrid look, for this block only (rcParams are restored on exit)."""
    import seaborn as sns
    from cycler import cycler

    rc = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook"),
          "axes.prop_cycle": cycler(color=sns.color_palette("deep"))}
    with matplotlib.rc_context(rc):
        yield


def new_figure(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1) -> tuple[Figure, Any]:
    """A Figure of its own (no pyplot, no global state) and its axes."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def save_figure(fig: Figure, out: Path, name: str) -> None:
    with warnings.catch_warnings():  # Optuna's contour has a colorbar tight_layout warns of
        warnings.filterwarnings("ignore", message="This figure includes Axes")
        fig.tight_layout()
    fig.savefig(out / name, dpi=110)


def _spread_note(n_max: int) -> str:
    return "" if n_max > 1 else (" These are single runs: differences of about half a point "
                                 "are within seed-to-seed noise (run with --replicates 3 to "
                                 "measure it).")


def loss_curves(runs: list[FinishedTrial], out: Path) -> ReportFigure | None:
    """Mean train loss per epoch for each labelled run, one panel per group, replicate bands."""
    labels = by_label(runs)
    groups = sorted({rs[0].group or "other" for rs in labels.values()},
                    key=lambda g: (GROUP_ORDER.index(g) if g in GROUP_ORDER else 99, g))
    if not groups:
        return None
    ncols = min(4, len(groups))
    nrows = -(-len(groups) // ncols)
    fig, axes = new_figure((4.2 * ncols, 3.4 * nrows), nrows, ncols)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    finals = []
    for ax, group in zip(axes.flat, groups, strict=False):
        for label, rs in labels.items():
            if (rs[0].group or "other") != group or not rs[0].train_loss:
                continue
            curves = [r.train_loss for r in rs if r.train_loss]
            epochs = range(1, min(len(c) for c in curves) + 1)
            mean = [sum(c[e - 1] for c in curves) / len(curves) for e in epochs]
            line = ax.plot(epochs, mean, marker="o", ms=3, label=label)[0]
            if len(curves) > 1:
                lo = [min(c[e - 1] for c in curves) for e in epochs]
                hi = [max(c[e - 1] for c in curves) for e in epochs]
                ax.fill_between(epochs, lo, hi, color=line.get_color(), alpha=0.2)
            if rs[0].notebook_loss:
                nb = rs[0].notebook_loss
                ax.plot(range(1, len(nb) + 1), nb, "x", color=line.get_color(), alpha=0.7)
            finals.append((mean[-1], label))
        ax.set(title=group, xlabel="epoch", ylabel="mean train loss")
        ax.legend(fontsize=7)
    save_figure(fig, out, "loss_curves.png")
    finals.sort()
    if len(finals) == 1:
        text = (f"One labelled run, {finals[0][1]}, ended at a mean train loss of "
                f"{finals[0][0]:.3f}; there is no other label to compare it with.")
    else:
        text = (f"Lowest final mean train loss: {finals[0][1]} ({finals[0][0]:.3f}); highest: "
                f"{finals[-1][1]} ({finals[-1][0]:.3f}). Crosses are the notebook's printed "
                "last-batch losses, which swing widely from batch to batch; the lines are "
                "means over each whole epoch.") if finals else "No loss curves recorded."
    return _figure("loss_curves.png", "Training loss per epoch", text)


def accuracy_by_label(runs: list[FinishedTrial], out: Path) -> ReportFigure | None:
    """Mean test accuracy per label with 95% intervals; the notebook's value as a red mark."""
    labels = by_label(runs)
    if not labels:
        return None
    stats = {k: summarize([r.test_accuracy for r in v]) for k, v in labels.items()}
    order = sorted(stats, key=lambda k: stats[k].mean)
    fig, axes = new_figure((8, 0.35 * len(order) + 1.5))
    ax = axes[0, 0]
    for y, label in enumerate(order):
        s = stats[label]
        ax.errorbar(s.mean, y, xerr=s.ci95 or 0, fmt="o", color="C0", capsize=3)
        nb = labels[label][0].notebook_accuracy
        if nb is not None:
            ax.plot(nb, y, "D", color="C3", ms=5, label="notebook" if y == 0 else None)
    ax.set_yticks(range(len(order)), order)
    ax.set_xlabel("test accuracy (%)")
    if any(labels[k][0].notebook_accuracy is not None for k in order):
        ax.plot([], [], "D", color="C3", label="notebook")
        ax.legend(loc="lower right")
    save_figure(fig, out, "accuracy_by_label.png")
    best, second = order[-1], order[-2] if len(order) > 1 else None
    text = f"Highest: {best} at {stats[best].mean:.2f}% (n={stats[best].n})." if second else \
        (f"One label, {best}, at {stats[best].mean:.2f}% (n={stats[best].n}); there is no "
         "other label to compare it with.")
    if second:
        verdict = compare(stats[best], stats[second])
        gap = stats[best].mean - stats[second].mean
        text += (f" Next: {second} at {stats[second].mean:.2f}%, {gap:.2f} points lower; "
                 + {"clear": "the gap exceeds the replicate spread.",
                    "within noise": "the gap is within the replicate spread.",
                    "untested": "with single runs the spread is not measured."}[verdict])
    notebook = {k: labels[k][0].notebook_accuracy for k in order}
    deltas = [(stats[k].mean - nb, k) for k, nb in notebook.items() if nb is not None]
    if deltas:
        worst = max(deltas, key=lambda d: abs(d[0]))
        text += (f" Against the notebook's {len(deltas)} reported accuracies the largest "
                 f"difference is {worst[0]:+.2f} points ({worst[1]}).")
    # the noise sentence is about comparing runs: with one label there is nothing to compare
    note = _spread_note(max(s.n for s in stats.values())) if second else ""
    return _figure("accuracy_by_label.png", "Test accuracy per label", text + note)


def momentum(runs: list[FinishedTrial], out: Path) -> ReportFigure | None:
    """Momentum against test accuracy for runs that differ from the baseline only in it."""
    base = [r for r in runs if tuple(r.config["hidden"]) == (128, 64) and not r.config["l1"]
            and not r.config["l2"] and not r.config["dropout"]]
    points = sorted((r.config["momentum"], r.test_accuracy) for r in base)
    if len({m for m, _ in points}) < 2:
        return None
    fig, axes = new_figure((7, 4))
    ax = axes[0, 0]
    ax.scatter([m for m, _ in points], [a for _, a in points], s=18, label="trials")
    nb = sorted({(r.config["momentum"], r.notebook_accuracy) for r in base
                 if r.notebook_accuracy is not None})
    if nb:
        ax.plot(*zip(*nb, strict=True), "D--", color="C3", ms=5, label="notebook")
    ax.set(xlabel="SGD momentum", ylabel="test accuracy (%)",
           title="784-128-64-10, lr 0.01, batch 64")
    ax.legend()
    save_figure(fig, out, "momentum.png")
    best_m, best_a = max(points, key=lambda p: p[1])
    text = (f"Best: momentum {best_m:.2f} at {best_a:.2f}%; lowest momentum tried "
            f"({points[0][0]:.2f}) reached {points[0][1]:.2f}%.")
    high = [(m, a) for m, a in points if m > best_m]
    if high:
        worst_m, worst_a = min(high, key=lambda p: p[1])
        drop = best_a - worst_a
        text += f" Above the best, accuracy falls to {worst_a:.2f}% at momentum {worst_m:.2f}"
        text += (" (less than half a point: within the seed-to-seed noise of single runs)."
                 if drop < 0.5 else
                 f", {drop:.2f} points lower: the effective step grows like 1/(1 - momentum), "
                 "and past a point the optimizer overshoots, the instability the notebook "
                 "describes.")
    else:
        text += " No momentum above the best was tried, so the drop-off is not shown."
    return _figure("momentum.png", "Momentum vs accuracy (notebook 4b/4c)", text)


def regularization(runs: list[FinishedTrial], out: Path) -> ReportFigure | None:
    """L1 and L2 lambda against accuracy and penalised-layer sparsity."""
    pen = [(("l1" if r.config["l1"] else "l2"), r.config["l1"] or r.config["l2"], r)
           for r in runs if r.config["l1"] or r.config["l2"]]
    if not pen:
        return None
    fig, axes = new_figure((10, 4), 1, 2)
    a1, a2 = axes[0]
    for kind, color in (("l1", "C0"), ("l2", "C1")):
        pts = sorted(((lam, r) for k, lam, r in pen if k == kind), key=lambda p: p[0])
        if not pts:
            continue
        a1.plot([p[0] for p in pts], [p[1].test_accuracy for p in pts], "o", color=color,
                label=kind.upper())
        a2.plot([p[0] for p in pts], [100 * (p[1].small_fraction or 0) for p in pts], "o",
                color=color, label=kind.upper())
    a1.set(xscale="log", xlabel="lambda", ylabel="test accuracy (%)")
    a2.set(xscale="log", xlabel="lambda", ylabel="fc weights with |w| < 1e-3 (%)")
    a1.legend()
    a2.legend()
    save_figure(fig, out, "regularization.png")
    text = []
    for kind in ("l1", "l2"):
        pts = [(lam, r) for k, lam, r in pen if k == kind]
        if pts:
            lam, r = max(pts, key=lambda p: p[1].test_accuracy)
            sp = max(pts, key=lambda p: p[1].small_fraction or 0)
            text.append(f"{kind.upper()}: best {r.test_accuracy:.2f}% at lambda {lam:.2g}; "
                        f"most near-zero weights {100 * (sp[1].small_fraction or 0):.1f}% at "
                        f"lambda {sp[0]:.2g}.")
    return _figure("regularization.png", "L1 vs L2 on the penalised layer", " ".join(text) +
                   " The notebook's claim that L1 induces sparsity is what the right panel "
                   "measures.")


def capacity(runs: list[FinishedTrial], out: Path) -> ReportFigure | None:
    """Accuracy against parameter count, for runs that differ in architecture."""
    archs = {tuple(r.config["hidden"]) for r in runs}
    if len(archs) < 2:
        return None
    fig, axes = new_figure((7, 4))
    ax = axes[0, 0]
    pts = [(r.parameters or 0, r.test_accuracy, hidden_str(r.config["hidden"]))
           for r in runs]
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=18)
    for arch in {p[2] for p in pts}:
        mine = [p for p in pts if p[2] == arch]
        best = max(mine, key=lambda p: p[1])
        ax.annotate(arch, best[:2], fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xscale="log", xlabel="parameters", ylabel="test accuracy (%)")
    save_figure(fig, out, "capacity.png")
    best = max(pts, key=lambda p: p[1])
    small = min(pts, key=lambda p: p[0])
    return _figure("capacity.png", "Depth and width: accuracy vs parameters",
                   f"Best: {best[2]} ({best[0]:,} parameters) at {best[1]:.2f}%; the smallest "
                   f"model, {small[2]} ({small[0]:,} parameters), reached {small[1]:.2f}%.")


Maker = tuple[str, Callable[[], ReportFigure | None]]  # (title, draw it or say there is none)


def trial_figures(runs: list[FinishedTrial], out: Path) -> list[Maker]:
    """The figures drawn from finished trials, each under this module's style."""
    def styled(fn: Callable[[list[FinishedTrial], Path], ReportFigure | None]
               ) -> Callable[[], ReportFigure | None]:
        def draw() -> ReportFigure | None:
            with style():
                return fn(runs, out)
        return draw

    makers = ((loss_curves, "Training loss per epoch"),
              (accuracy_by_label, "Test accuracy per label"),
              (momentum, "Momentum vs accuracy"), (regularization, "L1 vs L2"),
              (capacity, "Accuracy vs parameters"))
    return [(title, styled(f)) for f, title in makers]
