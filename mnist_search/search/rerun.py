"""Re-running a finished trial from what it stored, and saying whether the numbers repeat.

A trial trained alone re-runs from its config. A member of a stack re-runs with its whole
stack (the trials in its `stack` attr, each stopping after the epochs it ran, as pruning or
a time budget stopped it), because the stack's fused first-layer GEMM rounds differently
from a lone model's: only the same stack reproduces a member to the last bit. With the same
device kind, library versions, data and thread count, CPU results are bit-identical.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial

from ..config import TrainConfig, is_int
from ..data import Data
from ..errors import UsageError

__all__ = ["RerunReport", "rerun_trial"]


@dataclass(frozen=True)
class RerunReport:
    number: int
    recorded_test_accuracy: float | None
    test_accuracy: float | None  # None: the re-run did not finish (diverged, stopped)
    recorded_final_loss: float | None
    final_loss: float | None
    differences: tuple[str, ...] = ()  # what differs from when it ran: device, versions, data
    stack: tuple[int, ...] = field(default=())  # the trials re-run together
    weights_equal: bool | None = None  # the weights' digests match (None: none recorded)

    @property
    def identical(self) -> bool:
        return self.test_accuracy is not None and self.weights_equal is not False and \
            self.recorded_test_accuracy == self.test_accuracy and \
            self.recorded_final_loss == self.final_loss


def _members(study: optuna.Study, trial: FrozenTrial) -> list[FrozenTrial]:
    numbers = trial.user_attrs.get("stack") or [trial.number]
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    missing = [n for n in numbers if n not in by_number or "config" not in by_number[n].user_attrs]
    if missing:
        raise UsageError(f"trial {trial.number} trained in a stack with trials {numbers}, but "
                         f"{missing} left no config to re-run")
    return [by_number[n] for n in numbers]


def _losses(trial: FrozenTrial) -> list[float]:
    """The per-epoch losses a trial recorded ([] for none, or for a value edited into
    something that is not a list of numbers)."""
    value = trial.user_attrs.get("train_loss")
    if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
        return [float(v) for v in value]
    return []


def _environment(trial: FrozenTrial, device: str, data: Data) -> list[str]:
    import torch

    from ..training.engine import NUMERICS

    a = trial.user_attrs
    now = {"device": device, "torch_version": str(torch.__version__),
           "optuna_version": optuna.__version__, "data_digest": data.digest,
           "threads": torch.get_num_threads(), "numerics": NUMERICS}
    out = [f"{k} {a[k]} -> {v}" for k, v in now.items() if a.get(k) not in (None, v)]
    if "numerics" not in a:  # recorded before numerics were versioned
        out.append(f"numerics not recorded (trained before version {NUMERICS}, maybe by "
                   "other arithmetic)")
    return out


def rerun_trial(study: optuna.Study, number: int, device: str | None = None,
                data: Data | None = None) -> tuple[RerunReport, object]:
    """Retrain trial `number` (with its stack) and compare; returns the report and the new
    TrainResult (or the exception that ended the member)."""
    import torch

    from ..training.train import StopTraining, load_for, train_population

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials or "config" not in trials[number].user_attrs:
        raise UsageError(f"study {study.study_name!r} has no trial {number} with a stored "
                         "config to re-run")
    target = trials[number]
    members = _members(study, target)
    try:
        configs = [TrainConfig(**{**m.user_attrs["config"], **({"device": device} if device
                                                                else {})}) for m in members]
    except (TypeError, ValueError) as exc:  # a config edited outside this package
        raise UsageError(f"trial {number}'s stored config (or its stack's) cannot be trained "
                         f"again ({' '.join(str(exc).split())[:200]})") from None
    ran = [len(_losses(m)) for m in members]

    def stop_as_before(member: int, report: object) -> None:
        if getattr(report, "epoch", 0) >= ran[member] and ran[member] < configs[member].epochs:
            raise StopTraining("stopped here the first time")

    threads = target.user_attrs.get("threads")
    before = torch.get_num_threads()
    if not (threads is None or (is_int(threads) and 1 <= threads <= 4 * (os.cpu_count() or 1))):
        # a stored count the machine cannot run: libgomp aborts on 10^9 threads
        raise UsageError(f"trial {number}'s stored threads = {str(threads)[:40]!r} is not "
                         f"allowed: expected an integer in [1, {4 * (os.cpu_count() or 1)}]")
    if threads:
        torch.set_num_threads(int(threads))
    try:
        data = data if data is not None else load_for(configs[0], _device(configs[0]))
        differences = _environment(target, _device(configs[0]), data)
        outcomes = train_population(configs, data, stop_as_before)
    finally:
        torch.set_num_threads(before)
    outcome = outcomes[[m.number for m in members].index(number)]
    return _report(target, outcome, differences, members), outcome


def _device(config: TrainConfig) -> str:
    from ..training.train import resolve_device

    return resolve_device(config.device)


def _report(target: FrozenTrial, outcome: object, differences: Sequence[str],
            members: Sequence[FrozenTrial]) -> RerunReport:
    from ..training.train import TrainResult

    a = target.user_attrs
    recorded_loss = _losses(target)[-1] if _losses(target) else None
    acc: float | None = None
    loss: float | None = None
    same_weights: bool | None = None
    if isinstance(outcome, TrainResult):
        acc, loss = round(outcome.test_accuracy, 4), round(outcome.train_loss[-1], 6)
        if a.get("weights_digest"):
            same_weights = a["weights_digest"] == outcome.weights_digest()
    return RerunReport(target.number, a.get("test_accuracy"), acc, recorded_loss, loss,
                       tuple(differences), tuple(m.number for m in members), same_weights)
