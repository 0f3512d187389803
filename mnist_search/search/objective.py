"""The Optuna objective: a trial in, a trained MLP's accuracy out.

`Objective` is what a user hands to `study.optimize`; the CLI's workers train single trials
and stacked populations with the same pieces (`start_trial`, `EpochReporter`, `settle`), so
every trial is suggested, reported and recorded one way, whoever runs it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import BaseTrial, TrialState

from ..config import TrainConfig, mlp_parameters
from ..errors import NonFiniteLossError
from ..spec import StudySpec, load_spec
from .models import ModelSaver
from .notes import write_trial_note

if TYPE_CHECKING:  # torch is imported where training happens, not by the run's parent
    from ..data import Data
    from ..training.train import EpochReport, TrainResult

log = logging.getLogger(__name__)

# FAIL trials with these reasons are a real outcome of their config (it diverges), so they
# count as finished; interrupted or killed trials do not, and get run again.
DETERMINISTIC_FAILURES = ("nonfinite",)


def trial_seed(study_seed: int, number: int) -> int:
    """The training seed of trial `number`: a hash, so nearby trials get unrelated streams."""
    digest = hashlib.sha256(f"mnist-search:{study_seed}:{number}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def study_seed(study: optuna.Study, spec: StudySpec) -> int:
    """The seed the stored study was created with (`run --seed` may differ from the file)."""
    return int(study.user_attrs.get("seed", spec.seed))


def config_for_trial(trial: BaseTrial, spec: StudySpec, device: str,
                     seed_base: int | None = None) -> TrainConfig:
    """Fixed values, then the reference's fields (if labelled), then the search space."""
    values: dict[str, Any] = dict(spec.fixed)
    if trial.user_attrs.get("label") is not None:
        values.update(spec.reference_space.suggest(trial))
    values.update(spec.search.suggest(trial))
    # A retried trial inherits user attrs, seed included, so it re-runs exactly.
    seed = trial.user_attrs.get("seed")
    if seed is None:
        seed = trial_seed(spec.seed if seed_base is None else seed_base, trial.number)
    config = TrainConfig(**{**values, "seed": int(seed), "device": device})
    trial.set_user_attr("seed", config.seed)
    trial.set_user_attr("architecture", config.architecture)
    trial.set_user_attr("config", config.to_dict())
    return config


def worker_name() -> str:
    """host:pid of this process, recorded on the trials it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def start_trial(trial: BaseTrial, spec: StudySpec, device: str,
                seed_base: int | None = None) -> TrainConfig:
    """Everything before training: the config, what ran it, and a dashboard note."""
    config = config_for_trial(trial, spec, device, seed_base)
    trial.set_user_attr("worker", worker_name())
    cap = spec.constraints.get("max_parameters")
    if cap is not None:  # known before training: pruned and failed trials carry it too
        trial.set_constraint("parameters", mlp_parameters(config.hidden) - cap)
    if isinstance(trial, optuna.Trial):  # a FixedTrial has no study to hold a note
        write_trial_note(trial, config)
    return config


def objective_value(spec: StudySpec, test_accuracy: float, val_accuracy: float | None) -> float:
    """The first objective from an epoch's accuracies: what is reported and pruned on."""
    if spec.objective == "val_accuracy":
        assert val_accuracy is not None, "a val_accuracy study always holds out images"
        return val_accuracy
    return test_accuracy


def objective_values(spec: StudySpec, result: TrainResult) -> tuple[float, ...]:
    """Every objective of a finished trial, in the study file's order."""
    return metric_values(spec.objectives, result)


def metric_values(names: Sequence[str], result: TrainResult) -> tuple[float, ...]:
    """The named objectives (test_accuracy, val_accuracy, parameters, train_seconds) of a
    finished run, in that order."""
    metric = {"test_accuracy": result.test_accuracy, "val_accuracy": result.val_accuracy,
              "parameters": float(result.parameter_count),
              "train_seconds": result.member_seconds}
    values = tuple(metric[name] for name in names)
    assert all(v is not None for v in values), "a val_accuracy study always holds out images"
    return tuple(float(v) for v in values if v is not None)


class EpochReporter:
    """Per-epoch callback: intermediate values for the dashboard and pruning.

    Reference trials are never pruned: every labelled run gets all its epochs. Optuna can
    neither report nor prune a multi-objective trial, so those only keep the history.
    """

    def __init__(self, trial: BaseTrial, spec: StudySpec) -> None:
        self.trial, self.spec = trial, spec
        self.reports = not spec.multi_objective
        self.prunable = self.reports and "label" not in trial.user_attrs
        self.history: list[EpochReport] = []

    def __call__(self, report: EpochReport) -> None:
        from ..training.train import StopTraining

        self.history.append(report)
        if not self.reports:
            return
        self.trial.report(objective_value(self.spec, report.test_accuracy, report.val_accuracy),
                          report.epoch)
        if self.prunable and self.trial.should_prune():
            raise StopTraining(f"pruned after epoch {report.epoch}")


def torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def versions() -> dict[str, Any]:
    import torch

    from ..training.engine import NUMERICS

    return {"torch_version": str(torch.__version__), "optuna_version": optuna.__version__,
            "numerics": NUMERICS}


def record_result(trial: BaseTrial, result: TrainResult) -> None:
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
        # A stacked member shares its stack's wall time: both, under names that say which.
        "stack_seconds": round(result.seconds, 3),
        "population_size": result.population_size,
        "member_seconds": round(result.member_seconds, 3),
        "device": result.device,
        "threads": torch_threads(),
        "data_digest": result.data_digest,
        "weights_digest": result.weights_digest(),
        "holdout_digest": result.holdout_digest,
        **versions(),
    }
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def record_partial(trial: BaseTrial, history: list[EpochReport], reason: str) -> None:
    """For pruned or failed trials: the curve so far and why it stopped."""
    trial.set_user_attr("train_loss", [round(e.train_loss, 6) for e in history])
    trial.set_user_attr("test_accuracy_curve", [round(e.test_accuracy, 4) for e in history])
    trial.set_user_attr("fail_reason", reason)


def model_writer(trial: optuna.Trial, result: TrainResult) -> Callable[[Path], None]:
    """Writes the trial's model file, with what identifies and judges it as metadata."""
    from ..training.model_file import save_model_file

    meta = {"study": trial.study.study_name, "trial": str(trial.number),
            "label": str(trial.user_attrs.get("label") or ""),
            "test_accuracy": repr(result.test_accuracy),
            "val_accuracy": "" if result.val_accuracy is None else repr(result.val_accuracy),
            "data_digest": result.data_digest,
        "weights_digest": result.weights_digest(), "holdout_digest": result.holdout_digest or "",
            "optuna_version": optuna.__version__}
    return lambda path: save_model_file(path, result.config, result.state_dict, meta)


@dataclass(frozen=True)
class Settled:
    """How a trained trial ends: the state to tell and, when COMPLETE, its values (one per
    objective)."""

    state: TrialState
    values: tuple[float, ...] | None = None


def settle(trial: BaseTrial, spec: StudySpec, outcome: TrainResult | BaseException,
           history: list[EpochReport], saver: ModelSaver | None = None) -> Settled:
    """Record a training outcome on the trial (and its model, with a saver) and say how it
    ends; other errors re-raise."""
    from ..training.train import OutOfTime, StopTraining, TrainResult

    if isinstance(outcome, TrainResult):
        record_result(trial, outcome)
        cap = spec.constraints.get("max_train_seconds")
        if cap is not None:
            trial.set_constraint("train_seconds", outcome.member_seconds - cap)
        values = objective_values(spec, outcome)
        if saver is not None and isinstance(trial, optuna.Trial):
            if saver.admits(trial, values[0]):
                saver.save(trial, model_writer(trial, outcome))
            else:
                trial.set_user_attr("model_error", f"not kept: outside the {saver.keep} best "
                                                   "when it finished (--keep-models)")
        return Settled(TrialState.COMPLETE, values)
    if isinstance(outcome, StopTraining):
        record_partial(trial, history, "pruned")
        return Settled(TrialState.PRUNED)
    if isinstance(outcome, NonFiniteLossError):
        record_partial(trial, history, "nonfinite")
        trial.set_user_attr("fail_message", str(outcome))
        log.warning("trial %d failed: %s", trial.number, outcome)
        return Settled(TrialState.FAIL)
    if isinstance(outcome, OutOfTime):  # not its config's fault: run again next time
        record_partial(trial, history, "timeout")
        trial.set_user_attr("fail_message", str(outcome))
        return Settled(TrialState.FAIL)
    raise outcome


class Objective:
    """An Optuna objective for a study file: `study.optimize(Objective("s.toml"), ...)`.

    Args:
        study: a study-file path or a loaded StudySpec.
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:N" or "mps".
        data: tensors to train on (from `mnist_search.data.load_data`); by default the
            study's dataset is loaded on the first call and kept for every later one.
        artifacts: a folder to save each COMPLETE trial's model in, as an Optuna artifact
            (a safetensors file; see `mnist_search.load_model`). None: no models.
        keep_models: keep only the files of this many best trials (None: all).
        **fixed: override the file's [fixed] values (for example epochs=1), checked by the
            same rules as the file.

    Each call suggests from the study's search space (a labelled trial, as enqueued by
    `open_study`, takes its reference's values), trains with the stacked engine, reports
    every epoch (unlabelled trials can be pruned: optuna.TrialPruned), records the same user
    attrs as `mnist-search run` and returns the study's objective value. A trial whose loss
    diverges records fail_reason = "nonfinite" and returns NaN, which Optuna marks FAIL
    while the study goes on.
    """

    def __init__(self, study: str | Path | StudySpec, *, device: str = "auto",
                 data: Data | None = None, artifacts: str | Path | None = None,
                 keep_models: int | None = None, **fixed: Any) -> None:
        from ..training.train import resolve_device

        spec = study if isinstance(study, StudySpec) else load_spec(study)
        self.spec = spec.with_fixed(**fixed)
        self.device = resolve_device(device)
        self._data = data
        self.saver = None if artifacts is None else ModelSaver(Path(artifacts), keep_models)

    def data_for(self, config: TrainConfig) -> Data:
        """The study's data, loaded once: every trial shares dataset, holdout and device."""
        from ..training.train import load_for

        if self._data is None:
            self._data = load_for(config, self.device)
        return self._data

    def __call__(self, trial: BaseTrial) -> float | tuple[float, ...]:
        seed_base = study_seed(trial.study, self.spec) if isinstance(trial, optuna.Trial) \
            else None
        config = start_trial(trial, self.spec, self.device, seed_base)
        reporter = EpochReporter(trial, self.spec)
        outcome = train_one(config, self.data_for(config), reporter)
        settled = settle(trial, self.spec, outcome, reporter.history, self.saver)
        if settled.state == TrialState.PRUNED:
            raise optuna.TrialPruned(str(outcome))
        if settled.state == TrialState.FAIL:
            nan = float("nan")
            return nan if not self.spec.multi_objective else (nan,) * len(self.spec.objectives)
        assert settled.values is not None
        return settled.values[0] if len(settled.values) == 1 else settled.values


def train_one(config: TrainConfig, data: Data, on_epoch: Callable[[EpochReport], None]
              ) -> TrainResult | BaseException:
    """Train one config; a divergence or a stop by the callback is returned, not raised."""
    from ..training.train import train_population

    return train_population([config], data, lambda _member, report: on_epoch(report))[0]
