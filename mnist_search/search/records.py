"""What a trial records: the results of a trained one (every figure a reader needs to judge
or re-run it), the curve and reason of a stopped one, the versions that produced them, and
its model file's writer. search.lifecycle writes them, each in the transaction of its step.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import BaseTrial

from ..storage.rows import set_user_attrs

if TYPE_CHECKING:  # torch is imported where training happens, not by the run's parent
    from ..training.train import EpochReport, TrainResult

__all__ = ["model_writer", "partial_attrs", "record_result", "result_attrs", "torch_threads",
           "versions"]


def torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def versions() -> dict[str, Any]:
    import torch

    from ..training.engine import NUMERICS

    return {"torch_version": str(torch.__version__), "optuna_version": optuna.__version__,
            "numerics": NUMERICS}


def record_result(trial: BaseTrial, result: TrainResult, digest: str | None = None) -> None:
    """Everything a reader needs to understand or re-run the trial, as user attrs."""
    set_user_attrs(trial, result_attrs(result, digest))


def result_attrs(result: TrainResult, digest: str | None = None) -> dict[str, Any]:
    """What record_result writes (`digest`: the weights digest, when the caller has it
    already: it hashes every weight)."""
    return {
        "parameters": result.parameter_count,
        "train_loss": [round(x, 6) for x in result.train_loss],
        "last_batch_loss": [round(e.last_batch_loss, 6) for e in result.epochs],
        "test_accuracy_curve": [round(e.test_accuracy, 4) for e in result.epochs],
        "test_accuracy": round(result.test_accuracy, 4),
        "val_accuracy": None if result.val_accuracy is None else round(result.val_accuracy, 4),
        "penalised_layer_zero_fraction": result.zero_fraction,
        "penalised_layer_small_fraction": result.small_fraction,
        # A stacked member shares its stack's wall time: both, under names that say which.
        "stack_seconds": round(result.seconds, 3),
        "population_size": result.population_size,
        "member_seconds": round(result.member_seconds, 3),
        "device": result.device,
        "threads": torch_threads(),
        "data_digest": result.data_digest,
        "weights_digest": digest or result.weights_digest(),
        "holdout_digest": result.holdout_digest,
        **versions(),
    }


def partial_attrs(history: list[EpochReport], reason: str,
                  message: str | None = None) -> dict[str, Any]:
    """For pruned or failed trials: the curve so far, why it stopped, and what was said."""
    return {"train_loss": [round(e.train_loss, 6) for e in history],
            "test_accuracy_curve": [round(e.test_accuracy, 4) for e in history],
            "fail_reason": reason, **({} if message is None else {"fail_message": message})}


def model_writer(trial: optuna.Trial, result: TrainResult, digest: str
                 ) -> Callable[[Path], None]:
    """Writes the trial's model file, with what identifies and judges it as metadata."""
    from ..training.model_file import save_model_file

    meta = {"study": trial.study.study_name, "trial": str(trial.number),
            "label": str(trial.user_attrs.get("label") or ""),
            "test_accuracy": repr(result.test_accuracy),
            "val_accuracy": "" if result.val_accuracy is None else repr(result.val_accuracy),
            "data_digest": result.data_digest, "weights_digest": digest,
            "holdout_digest": result.holdout_digest or "", "optuna_version": optuna.__version__}
    return lambda path: save_model_file(path, result.config, result.state_dict, meta)
