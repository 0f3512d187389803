"""`mnist-search confirm`: a search's best configs retrained with fresh seeds."""

from __future__ import annotations

import json
import signal
from types import FrameType

import click

from .common import friendly, storage_option, use_storage

__all__ = ["confirm_cmd"]


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
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@friendly
def confirm_cmd(study: str, top: int, seeds: int, storage: str | None, device: str | None,
                as_json: bool) -> None:
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
    from ..search.confirm import confirm

    url = use_storage(storage)
    # SIGTERM ends it as Ctrl-C does: the replicates in training are told FAIL, not left
    # RUNNING (a later confirm also fails any it finds, then trains them again).
    signal.signal(signal.SIGTERM, _interrupt)
    report = confirm(load_study(study, url), top=top, seeds=seeds, device=device)
    if as_json:
        click.echo(json.dumps(report.to_json()))
        return
    direction = "maximize" if report.maximize else "minimize"
    click.echo(f"{study}: {len(report.configs)} config(s) x {seeds} fresh seed(s), objective "
               f"{report.objective} ({direction}); replicates in {study}-confirm")
    click.echo(f"{'trial':>6}  {'recorded':>9}  {'mean':>8}  {'95% interval':>18}  replicates")
    for c in report.configs:
        s = c.summary
        ci = "-" if s.ci95 is None else f"[{s.low:.2f}, {s.high:.2f}]"
        click.echo(f"{c.trial:>6}  {c.recorded:>9.2f}  {s.mean:>8.2f}  {ci:>18}  "
                   + " ".join(f"{v:.2f}" for v in c.values))
    click.echo(f"winner's curse: {report.winners_curse_pp:+.2f} (trial "
               f"{report.configs[0].trial}'s recorded value minus its replicates' mean)")
    click.echo(f"verdict: {report.verdict}")
