"""The `mnist-search` command: a click group of thin commands over the public Python API.

The only package that configures logging or writes results to stdout. Heavy imports (torch,
optuna) happen inside commands, so `mnist-search --help` stays instant. Each command lives
in the module of its family and is registered here.

Modules: run (run, reap, dashboard), results (studies, show, best, export, report), trained
(model, evaluate, rerun), confirm, train, check, init, data, and common (one-line errors
with exit codes, logging, --storage), which every command shares.
"""

from __future__ import annotations

import time

import click

from .. import __version__
from .check import check_cmd
from .common import OneLineGroup, setup_logging
from .confirm import confirm_cmd
from .data import data
from .init import init_cmd
from .results import best_cmd, export_cmd, report_cmd, show_cmd, studies_cmd
from .run import dashboard_cmd, reap_cmd, run_cmd
from .train import train_cmd
from .trained import evaluate_cmd, model_cmd, rerun_cmd

__all__ = ["cli", "main"]


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mnist-search")
@click.option("-v", "--verbose", count=True, help="More log output (DEBUG).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress.")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, debug: bool) -> None:
    """Optuna hyperparameter search for PyTorch MLPs on MNIST-style data."""
    ctx.ensure_object(dict)
    ctx.obj.update(verbose=verbose, quiet=quiet, debug=debug)
    setup_logging(verbose, quiet)


for command in (data, train_cmd, check_cmd, run_cmd, studies_cmd, show_cmd, best_cmd, export_cmd,
                report_cmd, reap_cmd, dashboard_cmd, model_cmd, evaluate_cmd, rerun_cmd,
                confirm_cmd, init_cmd):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    # when the command started, for the workers' start-up log (time.monotonic: one clock
    # for every process of the machine)
    cli.main(args=argv, prog_name="mnist-search", obj={"started": time.monotonic()})
