"""`mnist-search train`: one MLP, the notebook's baseline by default."""

from __future__ import annotations

import json
import logging
from typing import Any

import click

from ..config import OPTIMIZERS
from .common import friendly
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


@click.command("train")
@click.option("--hidden", default="128,64", show_default=True, callback=_parse_hidden,
              help="Hidden layer widths.")
@click.option("--dropout", type=float, default=0.0, show_default=True)
@click.option("--dropout-after", type=click.Choice(["first", "all"]), default="first",
              show_default=True)
@click.option("--l1", type=float, default=0.0, show_default=True, help="L1 lambda.")
@click.option("--l2", type=float, default=0.0, show_default=True, help="L2 lambda.")
@click.option("--penalty-layer", type=int, default=2, show_default=True,
              help="1-based Linear layer the penalty applies to (2 = fc2).")
@click.option("--lr", type=float, default=0.01, show_default=True)
@click.option("--momentum", type=float, default=0.0, show_default=True,
              help="SGD's and RMSprop's momentum (Adam and AdamW use betas 0.9, 0.999).")
@click.option("--optimizer", type=click.Choice(list(OPTIMIZERS)), default="sgd",
              show_default=True)
@click.option("--weight-decay", type=float, default=0.0, show_default=True,
              help="torch.optim's weight decay (decoupled for adamw).")
@click.option("--schedule", type=click.Choice(["constant", "cosine", "onecycle"]),
              default="constant", show_default=True,
              help="Learning-rate schedule, stepped once per batch.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--epochs", type=int, default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N, mps.")
@dataset_option
@click.option("--val-size", type=int, default=0, show_default=True,
              help="Images held out of train for validation.")
@click.option("--normalize", is_flag=True,
              help="Normalize pixels with MNIST's mean and std (the notebook does not).")
@click.option("--tf32", is_flag=True,
              help="float32 matmuls on TF32 tensor cores (CUDA; recorded as matmul_precision).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@friendly
def train_cmd(as_json: bool, tf32: bool, **options: Any) -> None:
    """Train one MLP (defaults: the notebook's baseline) and print its result."""
    from ..config import TrainConfig

    config = TrainConfig(**options, matmul_precision="tf32" if tf32 else "highest")
    from ..training.train import EpochReport, resolve_device, train

    resolve_device(config.device)

    def on_epoch(rep: EpochReport) -> None:
        log.info("epoch %d/%d  train loss %.4f  last batch %.4f  test acc %.2f%%", rep.epoch,
                 config.epochs, rep.train_loss, rep.last_batch_loss, rep.test_accuracy)

    result = train(config, on_epoch=on_epoch)
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
        click.echo(json.dumps(summary))
    else:
        click.echo(f"{config.architecture}  test accuracy {result.test_accuracy:.2f}%  "
                   f"({result.seconds:.1f} s on {result.device})")
