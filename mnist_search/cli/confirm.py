"""`mnist-search confirm`: a search's best configs retrained with fresh seeds."""

from __future__ import annotations

import signal
from types import FrameType

import click

from ..errors import INTERRUPTED
from ..tables import Table
from .common import echo_json, fail, friendly, quiet, storage_option, use_storage

__all__ = ["confirm_cmd"]


def _cell(value: object) -> object:
    return "-".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@click.command("confirm")
@click.argument("study")
@click.option("--top", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many of the best configs (for several objectives: of the Pareto "
                   "front) to retrain.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Fresh seeds per config.")
@storage_option
@click.option("--device", default=None, help="Device to train on [default: the trials'].")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes, as for run: same-shape configs and their seeds train "
                   "stacked in each.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@friendly
def confirm_cmd(study: str, top: int, seeds: int, storage: str | None, device: str | None,
                workers: int, as_json: bool) -> None:
    """Retrain the --top best configs of STUDY with --seeds fresh seeds each.

    Prints each config's recorded value, its replicates, their mean and 95% interval, the
    winner's curse (the top trial's recorded value minus its replicates' mean) and whether
    the top config beats the runner-up beyond seed noise (Welch's t-test, p < 0.05). The
    replicates go to the study STUDY-confirm, so STUDY's best trial, trial count and
    sampler are untouched; a second run reuses them and trains only missing seeds.

    \b
    Example:
      mnist-search confirm search --top 3 --seeds 5
    """
    from ..results.rows import load_study
    from ..workers.confirm import confirm
    from ..workers.pool import RunInterrupted

    url = use_storage(storage)
    # SIGTERM ends it as Ctrl-C does: the replicates in training are told FAIL, not left
    # RUNNING (a later confirm trains them again).
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = confirm(load_study(study, url), top=top, seeds=seeds, device=device,
                         workers=workers, progress=False if quiet() else None)
    except RunInterrupted:
        fail("interrupted; the replicates finished are kept, the interrupted ones are FAIL "
             "(run confirm again to resume)", INTERRUPTED)
    if as_json:
        echo_json(report.to_json())
        return
    direction = "maximize" if report.maximize else "minimize"
    click.echo(f"{study}: {len(report.configs)} config(s) x {seeds} fresh seed(s), objective "
               f"{report.objective} ({direction}); replicates in {study}-confirm")
    varying = list(dict.fromkeys(k for c in report.configs for k in c.params))
    shown = [{"trial": c.trial, **{k: _cell(c.params.get(k)) for k in varying},
              "recorded": f"{c.recorded:.2f}", "mean": f"{c.summary.mean:.2f}",
              "95% interval": "-" if c.summary.ci95 is None else
              f"[{c.summary.low:.2f}, {c.summary.high:.2f}]",
              "replicates": " ".join(f"{v:.2f}" for v in c.values)} for c in report.configs]
    click.echo(Table(shown, list(shown[0]) if shown else []))
    click.echo(f"winner's curse: {report.winners_curse_pp:+.2f} (trial "
               f"{report.configs[0].trial}'s recorded value minus its replicates' mean)")
    click.echo(f"verdict: {report.verdict}")
