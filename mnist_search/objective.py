"""From an Optuna trial to a TrainConfig and back: suggest, report, record.

The pieces are separate (config_for_trial, EpochReporter, record_result) so a worker can
train one trial at a time or several at once and still record each the same way.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any

import optuna

from .config import TrainConfig
from .spec import Param, StudySpec, reference_params

if TYPE_CHECKING:
    from .train import EpochReport, TrainResult

log = logging.getLogger(__name__)

# FAIL trials with these reasons are a real outcome of their config (it diverges), so they
# count as finished; interrupted or killed trials do not, and get run again.
DETERMINISTIC_FAILURES = ("nonfinite",)


def trial_seed(study_seed: int, number: int) -> int:
    """The training seed of trial `number`: a hash, so nearby trials get unrelated streams."""
    digest = hashlib.sha256(f"mnist-search:{study_seed}:{number}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def parse_hidden(value: str) -> tuple[int, ...]:
    return tuple(int(w) for w in str(value).split("-"))


def suggest_search(trial: optuna.Trial, search: dict[str, Param]) -> dict[str, Any]:
    """Define-by-run suggestions for the search space, as TrainConfig values."""
    out: dict[str, Any] = {}
    for name, p in search.items():
        if name in ("width", "penalty_lambda"):
            continue  # suggested together with depth / penalty
        if name == "depth":
            w = search["width"]
            depth = trial.suggest_int("depth", int(p.low), int(p.high))
            out["hidden"] = tuple(trial.suggest_int(f"width_{i}", int(w.low), int(w.high),
                                                    log=w.log) for i in range(1, depth + 1))
        elif name == "penalty":
            kind = trial.suggest_categorical("penalty", list(p.choices))
            out["l1"] = out["l2"] = 0.0
            if kind != "none":
                lam = search["penalty_lambda"]
                out[kind] = trial.suggest_float("penalty_lambda", lam.low, lam.high, log=lam.log)
        elif name == "hidden":
            choice = trial.suggest_categorical("hidden", ["-".join(map(str, c))
                                                          for c in p.choices])
            out["hidden"] = parse_hidden(choice)
        elif p.choices is not None:
            out[name] = trial.suggest_categorical(name, list(p.choices))
        elif p.is_int:
            out[name] = trial.suggest_int(name, int(p.low), int(p.high),
                                          step=int(p.step or 1), log=p.log)
        else:
            out[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
    return out


def config_for_trial(trial: optuna.Trial, spec: StudySpec, device: str) -> TrainConfig:
    """Fixed values, then the reference's keys (if labelled), then the search space."""
    values: dict[str, Any] = dict(spec.fixed)
    label = trial.user_attrs.get("label")
    if label is not None:
        choices, _ = reference_params(spec)
        for key, options in choices.items():
            value = trial.suggest_categorical(key, list(options))
            values[key] = parse_hidden(value) if key == "hidden" else value
    values.update(suggest_search(trial, spec.search))
    # A retried trial inherits user attrs, seed included, so it re-runs exactly.
    seed = trial.user_attrs.get("seed")
    if seed is None:
        seed = trial_seed(spec.seed, trial.number)
    config = TrainConfig(**{**values, "seed": int(seed), "device": device})
    trial.set_user_attr("seed", config.seed)
    trial.set_user_attr("architecture", config.architecture)
    trial.set_user_attr("config", config.to_dict())
    return config


def objective_value(spec: StudySpec, test_accuracy: float, val_accuracy: float | None) -> float:
    return val_accuracy if spec.objective == "val_accuracy" else test_accuracy  # type: ignore


class EpochReporter:
    """Per-epoch callback: intermediate values for the dashboard and pruning.

    Reference trials are never pruned: every labelled run gets all its epochs.
    """

    def __init__(self, trial: optuna.Trial, spec: StudySpec) -> None:
        self.trial, self.spec = trial, spec
        self.prunable = "label" not in trial.user_attrs
        self.history: list[EpochReport] = []

    def __call__(self, report: EpochReport) -> None:
        from .train import StopTraining

        self.history.append(report)
        self.trial.report(objective_value(self.spec, report.test_accuracy, report.val_accuracy),
                          report.epoch)
        if self.prunable and self.trial.should_prune():
            raise StopTraining(f"pruned after epoch {report.epoch}")


def versions() -> dict[str, str]:
    import torch

    return {"torch_version": torch.__version__, "optuna_version": optuna.__version__}


def record_result(trial: optuna.Trial, result: TrainResult) -> None:
    """Everything a reader needs to understand or re-run the trial, as user attrs."""
    attrs = {
        "parameters": result.parameter_count,
        "train_loss": [round(x, 6) for x in result.train_loss],
        "last_batch_loss": [round(e.last_batch_loss, 6) for e in result.epochs],
        "test_accuracy_curve": [round(e.test_accuracy, 4) for e in result.epochs],
        "test_accuracy": round(result.test_accuracy, 4),
        "val_accuracy": None if result.val_accuracy is None else round(result.val_accuracy, 4),
        "penalised_layer_zero_fraction": result.zero_fraction,
        "penalised_layer_small_fraction": result.small_fraction,
        "train_seconds": round(result.seconds, 3),
        "device": result.device,
        "data_digest": result.data_digest,
        **versions(),
    }
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def record_partial(trial: optuna.Trial, history: list[EpochReport], reason: str) -> None:
    """For pruned or failed trials: the curve so far and why it stopped."""
    trial.set_user_attr("train_loss", [round(e.train_loss, 6) for e in history])
    trial.set_user_attr("test_accuracy_curve", [round(e.test_accuracy, 4) for e in history])
    trial.set_user_attr("fail_reason", reason)
