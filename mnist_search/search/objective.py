"""The Optuna objective: a trial in, a trained MLP's accuracy out.

`Objective` is what a user hands to `study.optimize`. It starts, reports and settles each
trial through `search.lifecycle`, as the CLI's workers do, so every trial is recorded one
way, whoever runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import BaseTrial, TrialState

from ..config import TrainConfig
from ..errors import ConfigError
from ..spec import StudySpec, load_spec
from .artifacts import ModelSaver
from .lifecycle import EpochReporter, replicate_sampled, settle, start_trial, study_seed

if TYPE_CHECKING:  # torch is imported where training happens, not by the run's parent
    from ..data import Data
    from ..training.train import EpochReport, TrainResult

__all__ = ["Objective", "train_one"]


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
        reporter = EpochReporter(trial, self.spec)
        try:
            config = start_trial(trial, self.spec, self.device, seed_base)
            if seed_base is not None:  # a stored study: the config's other seeds, queued
                replicate_sampled(trial, self.spec, seed_base)
        except ConfigError as exc:  # sampled values no model can be built from: FAIL alone
            outcome: TrainResult | BaseException = exc
        else:
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
