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
import json
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from ..config import hidden_str
from ..search.summary import ALPHA, FinishedTrial, by_label, welch_p
from ..stats import summarize

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


def ranked(groups: dict[str, list[float]], what: str, unit: str = "%") -> str:
    """One or two sentences on the highest of `groups` (name -> replicate values), only with
    its n and interval, and whether it beats the next one beyond seed noise (Welch's
    t-test); single runs name no winner."""
    stats = {k: summarize(v) for k, v in groups.items() if v}
    if not stats:
        return ""
    order = sorted(stats, key=lambda k: -stats[k].mean)
    top = order[0]

    def shown(k: str) -> str:
        s = stats[k]
        interval = "" if s.ci95 is None else f" [{s.low:.2f}, {s.high:.2f}]"
        return f"{what + ' ' if what else ''}{k} at {s.mean:.2f}{unit}{interval} (n = {s.n})"

    if len(order) == 1:
        return f"Only {shown(top)}; there is nothing to compare it with."
    if stats[top].n < 2 or stats[order[1]].n < 2:
        return (f"Highest single run: {shown(top)}; next {shown(order[1])}. With one run "
                "each no winner is named: differences of about half a point are seed noise "
                "(run with --replicates 3 to measure it).")
    p = welch_p(groups[top], groups[order[1]])
    beyond = p < ALPHA if math.isfinite(p) else stats[top].mean != stats[order[1]].mean
    test = f"Welch's t-test, p = {p:.2g}" if math.isfinite(p) else "no spread in either"
    return (f"Highest mean: {shown(top)}; next {shown(order[1])}: "
            + ("beyond seed noise" if beyond else "not beyond seed noise, so neither is "
               "named best") + f" ({test}).")


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
    crosses = any(rs[0].notebook_loss for rs in labels.values())
    if len(finals) == 1:
        text = (f"One labelled run, {finals[0][1]}, ended at a mean train loss of "
                f"{finals[0][0]:.3f}; there is no other label to compare it with.")
    else:
        text = (f"Lowest final mean train loss: {finals[0][1]} ({finals[0][0]:.3f}); highest: "
                f"{finals[-1][1]} ({finals[-1][0]:.3f})." + (
                    " Crosses are the notebook's printed last-batch losses, which swing widely "
                    "from batch to batch; the lines are means over each whole epoch."
                    if crosses else "")) if finals else "No loss curves recorded."
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
    text = ranked({k: [r.test_accuracy for r in labels[k]] for k in order}, "")
    notebook = {k: labels[k][0].notebook_accuracy for k in order}
    deltas = [(stats[k].mean - nb, k) for k, nb in notebook.items() if nb is not None]
    if deltas:
        worst = max(deltas, key=lambda d: abs(d[0]))
        text += (f" Against the notebook's {len(deltas)} reported accuracies the largest "
                 f"difference is {worst[0]:+.2f} points ({worst[1]}).")
    return _figure("accuracy_by_label.png", "Test accuracy per label", text.strip())


def momentum(runs: list[FinishedTrial], out: Path) -> ReportFigure | None:
    """Momentum against test accuracy for runs that differ from the baseline only in it."""
    base = [r for r in runs if tuple(r.config["hidden"]) == (128, 64) and not r.config["l1"]
            and not r.config["l2"] and not r.config["dropout"]]
    by_m: dict[float, list[float]] = {}
    for r in base:
        by_m.setdefault(float(r.config["momentum"]), []).append(r.test_accuracy)
    if len(by_m) < 2:
        return None
    fig, axes = new_figure((7, 4))
    ax = axes[0, 0]
    moms = sorted(by_m)
    stats = [summarize(by_m[m]) for m in moms]
    ax.errorbar(moms, [s.mean for s in stats], yerr=[s.ci95 or 0 for s in stats], fmt="o",
                capsize=3, label="trials: mean, 95% interval" if max(s.n for s in stats) > 1
                else "trials (one run each)")
    nb = sorted({(r.config["momentum"], r.notebook_accuracy) for r in base
                 if r.notebook_accuracy is not None})
    if nb:
        ax.plot(*zip(*nb, strict=True), "D--", color="C3", ms=5, label="notebook")
    ax.set(xlabel="SGD momentum", ylabel="test accuracy (%)",
           title="784-128-64-10, lr 0.01, batch 64")
    ax.legend()
    save_figure(fig, out, "momentum.png")
    text = ranked({f"{m:g}": by_m[m] for m in moms}, "momentum")
    top = max(moms, key=lambda m: summarize(by_m[m]).mean)
    higher = [m for m in moms if m > top]
    if higher and max(s.n for s in stats) > 1:
        worst = min(higher, key=lambda m: summarize(by_m[m]).mean)
        drop = summarize(by_m[top]).mean - summarize(by_m[worst]).mean
        text += (f" Above it, momentum {worst:g} averages {drop:.2f} points lower"
                 + (": the effective step grows like 1/(1 - momentum), and past a point the "
                    "optimizer overshoots, the instability the notebook describes."
                    if drop >= 0.5 else "."))
    return _figure("momentum.png", "Momentum vs accuracy (notebook 4b/4c)", text)


_HOW = ("seed", "order_seed", "order_skip", "device", "pad_hidden")


def _rest(config: dict[str, Any]) -> str:
    """A config apart from its penalties and how it ran: what a penalty's zero must share."""
    return json.dumps({k: v for k, v in config.items() if k not in ("l1", "l2", *_HOW)},
                      sort_keys=True, default=str)


def regularization(runs: list[FinishedTrial], out: Path) -> ReportFigure | None:
    """Each penalty's lambda, zero included (the same config without it), against accuracy
    and the penalised layer's near-zero weights; means with 95% intervals over replicates."""
    pen = [r for r in runs if r.config["l1"] or r.config["l2"]]
    if not pen:
        return None
    kinds = [k for k in ("l1", "l2") if any(r.config[k] for r in pen)]
    rests = {_rest(r.config) for r in pen}
    zero = [r for r in runs if not r.config["l1"] and not r.config["l2"]
            and _rest(r.config) in rests]
    series: dict[str, dict[float, list[FinishedTrial]]] = {}
    for kind in kinds:
        by_lam: dict[float, list[FinishedTrial]] = {0.0: list(zero)} if zero else {}
        for r in pen:
            if r.config[kind] and not r.config["l2" if kind == "l1" else "l1"]:
                by_lam.setdefault(float(r.config[kind]), []).append(r)
        series[kind] = dict(sorted(by_lam.items()))
    fig, axes = new_figure((10, 4), 1, 2)
    a1, a2 = axes[0]
    for kind, color in zip(kinds, ("C0", "C1"), strict=False):
        lams = list(series[kind])
        acc = [summarize([r.test_accuracy for r in series[kind][lam]]) for lam in lams]
        small = [summarize([100 * (r.small_fraction or 0) for r in series[kind][lam]])
                 for lam in lams]
        a1.errorbar(lams, [s.mean for s in acc], yerr=[s.ci95 or 0 for s in acc], fmt="o-",
                    capsize=3, color=color, label=kind.upper())
        a2.errorbar(lams, [s.mean for s in small], yerr=[s.ci95 or 0 for s in small],
                    fmt="o-", capsize=3, color=color, label=kind.upper())
    positive = [lam for kind in kinds for lam in series[kind] if lam > 0]
    for ax, ylabel in ((a1, "test accuracy (%)"), (a2, "fc weights with |w| < 1e-3 (%)")):
        # symlog: linear around 0, so the unpenalised config is on the axis beside the rest
        ax.set_xscale("symlog", linthresh=min(positive))
        ax.set(xlabel="lambda (0: no penalty)", ylabel=ylabel)
        ax.legend()
    save_figure(fig, out, "regularization.png")
    text = []
    for kind in kinds:
        groups = {f"{lam:g}": [r.test_accuracy for r in rs] for lam, rs in series[kind].items()}
        text.append(f"{kind.upper()}: " + ranked(groups, "lambda"))
        if 0.0 in series[kind]:
            text.append(_costs(series[kind]))
    if "l1" in kinds:
        text.append("The notebook's claim that L1 induces sparsity is what the right panel "
                    "measures.")
    layer = pen[0].config.get("penalty_layer", 2)
    title = ("L1 vs L2" if len(kinds) == 2 else kinds[0].upper()) + \
        f" on the penalised layer (fc{layer})"
    return _figure("regularization.png", title, " ".join(t for t in text if t))


def _costs(by_lam: dict[float, list[FinishedTrial]]) -> str:
    """Which lambdas cost accuracy against none beyond seed noise (Welch's t-test)."""
    zero = [r.test_accuracy for r in by_lam[0.0]]
    if len(zero) < 2:
        return ""
    base = summarize(zero).mean
    costly, same = [], []
    for lam, rs in by_lam.items():
        vals = [r.test_accuracy for r in rs]
        if lam == 0.0 or len(vals) < 2:
            continue
        p = welch_p(vals, zero)
        gap = base - summarize(vals).mean
        if math.isfinite(p) and p < ALPHA and gap > 0:
            costly.append(f"{lam:g} ({gap:.2f} points)")
        elif not (math.isfinite(p) and p < ALPHA):
            same.append(f"{lam:g}")
    parts = []
    if same:
        parts.append(f"lambda {', '.join(same)} cannot be told from none (p >= {ALPHA})")
    if costly:
        parts.append(f"lambda {', '.join(costly)} cost accuracy against none beyond seed "
                     "noise")
    return ("Against no penalty: " + "; ".join(parts) + ".") if parts else ""


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
    by_arch: dict[str, list[float]] = {}
    for p in pts:
        by_arch.setdefault(p[2], []).append(p[1])
    small = min(pts, key=lambda p: p[0])
    small_mean = summarize(by_arch[small[2]])
    return _figure("capacity.png", "Depth and width: accuracy vs parameters",
                   ranked(by_arch, "") + f" The smallest model, {small[2]} ({small[0]:,} "
                   f"parameters), averages {small_mean.mean:.2f}% (n = {small_mean.n}).")


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
