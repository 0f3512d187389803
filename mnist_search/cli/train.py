"""`mnist-search train`: one MLP, the notebook's baseline by default."""

from __future__ import annotations

import dataclasses
import logging
import typing
from collections.abc import Callable
from typing import Any

import click

from ..config import RULES, TrainConfig
from .common import echo_json, friendly
from .data import dataset_option

__all__ = ["train_cmd"]

log = logging.getLogger("mnist_search")


def _parse_hidden(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in value.replace("-", ",").split(",") if w.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected widths like 128,64") from None
    if not widths or min(widths) < 1:
        raise click.BadParameter(f"{value!r}: expected one or more widths >= 1, like 128,64")
    return widths


# Set by other options (--tf32, --dataset) or by a population only, never by hand here.
_NOT_OPTIONS = ("hidden", "dataset", "matmul_precision", "order_seed", "order_skip",
                "pad_hidden")
# A few fields say more than their rule does.
_HELP = {
    "momentum": "SGD's and RMSprop's momentum (the Adam family uses betas 0.9, 0.999).",
    "weight_decay": "torch.optim's weight decay (decoupled for adamw).",
    "schedule": "Learning-rate schedule, stepped once per batch.",
    "penalty_layer": "1-based Linear layer the L1/L2 penalty applies to (2 = fc2).",
    "val_size": "Images held out of train for validation.",
    "normalize": "Normalize pixels with MNIST's mean and std (the notebook does not).",
    "input_dropout": "Dropout on the 784 input pixels.",
    "max_norm": "Rescale each hidden unit's incoming weights to at most this L2 norm (0: none).",
}


def config_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One option per TrainConfig field, its default and choices read from the dataclass
    and its help from the field's rule, so the command and the config cannot drift."""
    hints = typing.get_type_hints(TrainConfig)
    for f in reversed(dataclasses.fields(TrainConfig)):
        if f.name in _NOT_OPTIONS:
            continue
        flag, kind = "--" + f.name.replace("_", "-"), hints[f.name]
        help_text = _HELP.get(f.name, RULES[f.name][1][:1].upper() + RULES[f.name][1][1:] + ".")
        if kind is bool:
            command = click.option(flag, is_flag=True, help=help_text)(command)
            continue
        choices = typing.get_args(kind) if typing.get_origin(kind) is typing.Literal else ()
        command = click.option(flag, type=click.Choice(list(choices)) if choices else kind,
                               default=f.default, show_default=True, help=help_text)(command)
    return command


@click.command("train")
@click.option("--hidden", default="128,64", show_default=True, callback=_parse_hidden,
              help="Hidden layer widths.")
@config_options
@dataset_option
@click.option("--tf32", is_flag=True,
              help="float32 matmuls on TF32 tensor cores (CUDA; recorded as matmul_precision).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@friendly
def train_cmd(as_json: bool, tf32: bool, **options: Any) -> None:
    """Train one MLP (defaults: the notebook's baseline) and print its result."""
    from ..config import TrainConfig
    from ..errors import MnistSearchError, is_out_of_memory

    config = TrainConfig(**options, matmul_precision="tf32" if tf32 else "highest")
    from ..training.train import EpochReport, resolve_device, train

    resolve_device(config.device)

    def on_epoch(rep: EpochReport) -> None:
        log.info("epoch %d/%d  train loss %.4f  last batch %.4f  test acc %.2f%%", rep.epoch,
                 config.epochs, rep.train_loss, rep.last_batch_loss, rep.test_accuracy)

    try:
        result = train(config, on_epoch=on_epoch)
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        # as run fails such a trial out_of_memory: one line, what to shrink
        raise MnistSearchError(f"out of memory training {config.architecture} at batch "
                               f"{config.batch_size} on {config.device}: give a smaller "
                               "--hidden or --batch-size") from None
    summary = {
        "architecture": config.architecture, "parameters": result.parameter_count,
        "test_accuracy": round(result.test_accuracy, 2),
        "val_accuracy": None if result.val_accuracy is None else round(result.val_accuracy, 2),
        "train_loss": [round(x, 4) for x in result.train_loss],
        "last_batch_loss": [round(e.last_batch_loss, 4) for e in result.epochs],
        "seconds": round(result.seconds, 2), "device": result.device,
        "config": config.to_dict(),
    }
    if as_json:
        echo_json(summary)
    else:
        click.echo(f"{config.architecture}  test accuracy {result.test_accuracy:.2f}%  "
                   f"({result.seconds:.1f} s on {result.device})")
