"""Trained models out of a study: model (write a trial's file), evaluate (score a file),
rerun (train a trial again and compare)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import RUNTIME, UsageError
from ..files import check_output, replacing
from .common import artifacts_option, fail, friendly, storage_option, use_storage

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

__all__ = ["evaluate_cmd", "model_cmd", "rerun_cmd"]

log = logging.getLogger("mnist_search")


@click.command("model")
@click.argument("study")
@storage_option
@artifacts_option
@click.option("--trial", "number", type=click.IntRange(min=0), default=None,
              help="Trial number [default: the best trial].")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The .safetensors file to write (whole or not at all).")
@click.option("--force", is_flag=True,
              help="Replace an existing file at -o (never a database, a study file, a device "
                   "or the storage's models).")
@friendly
def model_cmd(study: str, storage: str | None, artifacts: Path | None, number: int | None,
              output: Path, force: bool) -> None:
    """Write the model of STUDY's best trial (or --trial N) to a safetensors file.

    \b
    Example:
      mnist-search model search -o best.safetensors
      python -c "import mnist_search as ms; print(ms.load_model('best.safetensors'))"
    """
    from optuna.artifacts import download_artifact
    from optuna.artifacts.exceptions import ArtifactNotFound

    from ..results.rows import load_study
    from ..search.artifacts import ModelStore, artifact_dir, model_artifact, storage_files
    from ..storage.connect import make_storage

    url = use_storage(storage)
    check_output(output, force=force, keep=storage_files(url, artifacts))
    st = load_study(study, url)
    trial = _pick(st, number)
    meta = model_artifact(trial, make_storage(url, create=False))
    if meta is None:
        raise UsageError(f"trial {trial.number} of {study!r} has no saved model "
                         f"({trial.user_attrs.get('model_error') or 'none was stored'}); "
                         f"train it again with: mnist-search rerun {study} {trial.number} -o FILE")
    try:
        with replacing(output) as tmp:
            download_artifact(artifact_store=ModelStore(artifact_dir(url, artifacts)),
                              file_path=str(tmp), artifact_id=meta.artifact_id)
    except ArtifactNotFound:
        raise UsageError(f"trial {trial.number}'s model file is gone from "
                         f"{artifact_dir(url, artifacts)} (removed by --keep-models, or the "
                         f"folder moved); re-create it: mnist-search rerun {study} "
                         f"{trial.number} -o FILE") from None
    click.echo(f"{output}: trial {trial.number} of {study}, test accuracy "
               f"{trial.user_attrs.get('test_accuracy')}%")


def _pick(study: optuna.Study, number: int | None) -> FrozenTrial:
    from optuna.trial import TrialState

    if number is not None:
        found = [t for t in study.get_trials(deepcopy=False) if t.number == number]
        if not found:
            raise UsageError(f"study {study.study_name!r} has no trial {number}")
        return found[0]
    if len(study.directions) > 1:
        raise UsageError(f"study {study.study_name!r} has several objectives: pick a trial of "
                         "its Pareto front with --trial N (see: mnist-search best)")
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise UsageError(f"study {study.study_name!r} has no finished trial yet")
    return study.best_trial


@click.command("evaluate")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dataset", default=None,
              help="mnist, fashion-mnist or a directory of IDX files [default: the model's].")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N, mps.")
@friendly
def evaluate_cmd(file: Path, dataset: str | None, device: str) -> None:
    """Test accuracy of a model file (as written by `model` or `rerun -o`)."""
    import dataclasses

    from ..training.model_file import evaluate_model_file, read_model_file
    from ..training.train import load_for, resolve_device

    config, meta, _ = read_model_file(file)
    if dataset is not None:
        config = dataclasses.replace(config, dataset=dataset)
    device = resolve_device(device)
    accuracy = evaluate_model_file(file, load_for(config, device), device)
    try:  # metadata is the file's word: a number, or nothing said
        recorded: float | None = float(meta.get("test_accuracy") or "nan")
    except ValueError:
        recorded = None
    same = dataset is None or dataset == config.dataset
    note = f" (recorded when trained: {recorded:.4f}%)" \
        if recorded is not None and recorded == recorded and same else ""
    click.echo(f"{file}: test accuracy {accuracy:.4f}% on {config.dataset}{note}")


@click.command("rerun")
@click.argument("study")
@click.argument("number", metavar="TRIAL", type=click.IntRange(min=0))
@storage_option
@click.option("--device", default=None, help="Device to re-run on [default: the trial's].")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the re-trained model to this .safetensors file.")
@click.option("--force", is_flag=True,
              help="Replace an existing file at -o (never a database, a study file, a device "
                   "or the storage's models).")
@friendly
def rerun_cmd(study: str, number: int, storage: str | None, device: str | None,
              output: Path | None, force: bool) -> None:
    """Train trial TRIAL of STUDY again from what it stored and compare the numbers.

    A trial trained in a stack re-runs with its stack. Exit 0 when test accuracy and final
    loss are identical, 1 otherwise, naming what differs (device, versions, data, threads).
    """
    from ..results.rows import load_study
    from ..search.artifacts import storage_files
    from ..search.rerun import rerun_trial
    from ..training.model_file import save_model_file
    from ..training.train import TrainResult

    url = use_storage(storage)
    if output is not None:
        check_output(output, force=force,  # before the training, not after it
                     keep=storage_files(url))
    report, outcome = rerun_trial(load_study(study, url), number, device)
    click.echo(f"{study} trial {number}: test accuracy {report.recorded_test_accuracy} -> "
               f"{report.test_accuracy}, final train loss {report.recorded_final_loss} -> "
               f"{report.final_loss}"
               + ("" if report.weights_equal is None else
                  ", weights bit-identical" if report.weights_equal else ", weights differ")
               + (f" (re-run with its stack {list(report.stack)})"
                  if len(report.stack) > 1 else ""))
    if output is not None and isinstance(outcome, TrainResult):
        save_model_file(output, outcome.config, outcome.state_dict,
                        {"study": study, "trial": str(number),
                         "test_accuracy": repr(outcome.test_accuracy)})
    if not report.identical:
        why = "; ".join(report.differences) or "the same device, versions, data and threads"
        fail(f"trial {number} did not repeat exactly ({why})", RUNTIME)
