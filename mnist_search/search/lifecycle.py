"""A trial's life, one way for every runner: start (config, seed, what ran it), report
(each epoch, pruning), settle (record the outcome and its model), tell, or fail.

`search.Objective` (a user's study.optimize) and the CLI's workers (`workers.slots`, a
population of trials) both go through these, so every trial is suggested, reported and
recorded alike, whoever runs it. The claiming side (fail stale, count, ask) is
`search.queue`, which takes its seeds from here.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import BaseTrial, TrialState

from ..config import TrainConfig, mlp_parameters
from ..errors import ConfigError, NonFiniteLossError, is_out_of_memory
from ..spec import StudySpec
from ..storage.internals import new_trial, new_trial_ids, retried_from, tell_trial, trial_id
from ..storage.rows import (
    AttrWrite,
    flush,
    params_held,
    set_user_attrs,
    trial_writes,
    write_attrs,
    write_held,
)
from .artifacts import ModelSaver
from .notes import trial_note
from .records import model_writer, partial_attrs, result_attrs

if TYPE_CHECKING:  # torch is imported where training happens, not by the run's parent
    from ..training.train import EpochReport, TrainResult

__all__ = ["DETERMINISTIC_FAILURES", "Configured", "EpochReporter", "Settled", "ask_trial",
           "configure_trials", "create_trial", "create_trials", "fail", "fail_reason",
           "finish_trials", "metric_values", "objective_value", "objective_values", "queued_seeds",
           "replicate_sampled", "settle", "settle_all", "start_trial", "start_trials",
           "start_write", "study_seed", "tell", "trial_config", "trial_ids", "trial_seed",
           "worker_name"]

log = logging.getLogger(__name__)

# FAIL trials with these reasons are a real outcome of their config (it diverges), so they
# count as finished; interrupted or killed trials do not, and get run again.
DETERMINISTIC_FAILURES = ("nonfinite", "invalid_config", "out_of_memory")


def trial_seed(study_seed: int, number: int | str) -> int:
    """The training seed of trial `number`: a hash, so nearby trials get unrelated streams."""
    digest = hashlib.sha256(f"mnist-search:{study_seed}:{number}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def queued_seeds(study_seed: int, identity: str, replicate: int) -> dict[str, int]:
    """The training seed and batch-order seed of a labelled or grid trial, from what it is
    (its identity, replicate included), never from its trial number: a trial interrupted
    and enqueued again trains exactly as it would have. Replicate r of every queued trial
    shares one batch order, so same-shape trials still stack on one order."""
    return {"seed": trial_seed(study_seed, identity),
            "order_seed": trial_seed(study_seed, f"order#{replicate}")}


def replicate_sampled(trial: BaseTrial, spec: StudySpec, seed_base: int) -> int:
    """Enqueue replicates 2..N (the study's `replicates`) of a sampled trial's config, once,
    when it starts; returns how many. Each is a trial of its own, with its own seed, so
    `rerun` and `model` work on any of them, and the sampler learns from each as a separate
    observation: Optuna's samplers model the objective from every finished trial, so a
    config seen N times weighs in with its spread as well as its mean, where telling the
    sampler a mean would make the first replicate wait for its siblings."""
    a = trial.user_attrs
    if spec.replicates < 2 or not isinstance(trial, optuna.Trial) or any(
            k in a for k in ("label", "grid_point", "replicate_of", "retry_of")):
        return 0
    params = trial.params
    for r in range(2, spec.replicates + 1):
        trial.study.enqueue_trial(params, user_attrs={
            "replicate_of": trial.number, "replicate": r,
            **queued_seeds(seed_base, f"replicate_of={trial.number}#{r}", r)})
    return spec.replicates - 1


def study_seed(study: optuna.Study, spec: StudySpec) -> int:
    """The seed the stored study was created with (`run --seed` may differ from the file)."""
    return int(study.user_attrs.get("seed", spec.seed))


def ask_trial(study: optuna.Study, storage: optuna.storages.RDBStorage, seed_base: int,
              heartbeat: int, queued: bool = True) -> optuna.Trial:
    """A new trial (or an enqueued one) from the study, its first heartbeat and its seed
    recorded at once; `queued=False`: the caller knows the queue is empty (no search), and
    its storage cannot create the trial with them (create_trial, else)."""
    attrs: dict[str, Any] = {"worker": worker_name(), "heartbeat_s": heartbeat}
    # Who runs it and how often it beats go in the claim's own transaction (or the new
    # trial's), with its first beat: a run stopped right after the claim leaves a trial
    # a later run knows to wait for, then takes over once it is stale.
    unit = trial_writes(storage)
    with unit.creating(lambda _: attrs) if unit is not None else contextlib.nullcontext():
        trial = study.ask() if queued else new_trial(study)
    # The seed is fixed the moment the trial exists, so even a trial whose worker dies
    # before training is retried with the seed it was meant to have.
    if "seed" not in trial.user_attrs:
        attrs["seed"] = trial_seed(seed_base, trial.number)
    else:  # inherited: only a re-run of a stale trial (or a warm start) starts with one
        retry_of = retried_from(storage, trial)
        if retry_of is not None:  # it inherits its params, label and seed
            attrs["retry_of"] = retry_of
    # The first beat in the same transaction: a worker killed right after the ask leaves a
    # RUNNING trial with a heartbeat (so it goes stale, unlike a trial that never beat,
    # which Optuna never counts as stale) and with its seed.
    set_user_attrs(trial, attrs, beat=bool(heartbeat))
    return trial


def create_trial(study: optuna.Study, storage: optuna.storages.RDBStorage, seed_base: int,
                 heartbeat: int) -> int | None:
    """The id of a new trial created with what ask_trial records (its worker, heartbeat
    interval, seed and first beat) in the same transaction, for a caller that knows the
    queue is empty; None where the storage cannot (ask_trial then writes them after)."""
    made = create_trials(study, storage, seed_base, heartbeat, 1)
    return None if made is None else made[0]


def create_trials(study: optuna.Study, storage: optuna.storages.RDBStorage, seed_base: int,
                  heartbeat: int, n: int) -> list[int] | None:
    """create_trial for n new trials, all in one transaction."""
    unit = trial_writes(storage)
    if unit is None:
        return None
    attrs = {"worker": worker_name(), "heartbeat_s": heartbeat}
    with unit.creating(lambda number: {**attrs, "seed": trial_seed(seed_base, number)}):
        return new_trial_ids(study, n)


def trial_config(trial: BaseTrial, spec: StudySpec, device: str,
                 seed_base: int | None = None) -> TrainConfig:
    """Fixed values, then the reference's fields (if labelled), then the search space
    (suggested on the trial). Records nothing else: start_trial does."""
    values: dict[str, Any] = dict(spec.fixed)
    if trial.user_attrs.get("label") is not None:
        values.update(spec.reference_space.suggest(trial))
    values.update(spec.search.suggest(trial))
    # A retried trial inherits user attrs, seed included, so it re-runs exactly; a queued
    # one carries its seeds from the enqueue (queued_seeds).
    seed = trial.user_attrs.get("seed")
    if seed is None:
        seed = trial_seed(spec.seed if seed_base is None else seed_base, trial.number)
    order = trial.user_attrs.get("order_seed")
    if order is not None and "order_seed" not in spec.fixed:
        values["order_seed"] = int(order)
    return TrainConfig(**{**values, "seed": int(seed), "device": device})


def worker_name() -> str:
    """host:pid of this process, recorded on the trials it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Configured:
    """A batch of trials made ready to start (configure_trials): each trial a model can be
    built for with its config, and each refused trial with why (its parameters written).
    The parameters the pending ones suggested wait in this thread's unit of work
    (rows.TrialWrites) for the batch's start (start_trials)."""

    pending: list[tuple[BaseTrial, TrainConfig]]
    refused: list[tuple[BaseTrial, ConfigError]]


def configure_trials(trials: Sequence[BaseTrial], spec: StudySpec, device: str,
                     seed_base: int | None = None) -> Configured:
    """Each trial's config, its suggested parameters held (params_held): the last trial's
    are written with the batch's start; each earlier one's as soon as it is sampled, so the
    next trial's sampler finds them, as it would find a trial of another worker (TPE's
    constant liar reads running trials' parameters). A trial whose values no model can be
    built from is refused, with its parameters written first, as Optuna's suggest would
    have written them."""
    study = trials[0].study if trials and isinstance(trials[0], optuna.Trial) else None
    pending: list[tuple[BaseTrial, TrainConfig]] = []
    refused: list[tuple[BaseTrial, ConfigError]] = []
    with params_held(study):
        for i, trial in enumerate(trials):
            try:
                pending.append((trial, trial_config(trial, spec, device, seed_base)))
            except ConfigError as exc:  # sampled values no model can be built from
                refused.append((trial, exc))
            if i < len(trials) - 1:
                write_held(trial)
    for trial, _ in refused:
        write_held(trial)
    return Configured(pending, refused)


def start_trials(spec: StudySpec, configured: Configured,
                 starts: Sequence[tuple[BaseTrial, TrainConfig, dict[str, Any]]]) -> None:
    """Start a configured batch, every trial's start in one transaction: for each (trial,
    the config it trains, further attrs) its held parameters (rows.flush), config, seed,
    what ran it and a dashboard note (start_write)."""
    flush([start_write(trial, spec, config, attrs) for trial, config, attrs in starts])


def start_trial(trial: BaseTrial, spec: StudySpec, device: str,
                seed_base: int | None = None, *, config: TrainConfig | None = None,
                attrs: dict[str, Any] | None = None) -> TrainConfig:
    """A batch of one through configure_trials and start_trials (or `config`, given, with
    nothing to suggest). A config no model can be built from (ConfigError) is raised once
    the parameters that led to it are written."""
    if config is not None:
        start_trials(spec, Configured([(trial, config)], []), [(trial, config, attrs or {})])
        return config
    configured = configure_trials([trial], spec, device, seed_base)
    if configured.refused:
        raise configured.refused[0][1]
    (_, config), = configured.pending
    start_trials(spec, configured, [(trial, config, attrs or {})])
    return config


def trial_ids(trials: Sequence[optuna.Trial]) -> list[int]:
    """The storage's ids of live trials (what a heartbeat beats for)."""
    return [trial_id(t) for t in trials]


def start_write(trial: BaseTrial, spec: StudySpec, config: TrainConfig,
                attrs: dict[str, Any] | None = None) -> AttrWrite:
    """What start_trial writes, for writing with other trials' (rows.flush adds the
    parameters held for it); the parameters constraint, where the study caps them, is set
    at once."""
    cap = spec.constraints.get("max_parameters")
    if cap is not None:  # known before training: pruned and failed trials carry it too
        trial.set_constraint("parameters", mlp_parameters(config.hidden) - cap)
    return AttrWrite(trial, {"seed": config.seed, "architecture": config.architecture,
                             "config": config.to_dict(), "worker": worker_name(),
                             **(attrs or {})},
                     note=trial_note(trial, config))  # a FixedTrial has no study: no note


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
        self.reports_values = not spec.multi_objective  # Optuna reports one objective only
        self.prunable = self.reports_values and "label" not in trial.user_attrs
        self.history: list[EpochReport] = []

    def __call__(self, report: EpochReport) -> None:
        from ..training.train import StopTraining

        self.history.append(report)
        if not self.reports_values:
            return
        self.trial.report(objective_value(self.spec, report.test_accuracy, report.val_accuracy),
                          report.epoch)
        if self.prunable and self.trial.should_prune():
            raise StopTraining(f"pruned after epoch {report.epoch}")


@dataclass(frozen=True)
class Settled:
    """How a trained trial ends: the state to tell and, when COMPLETE, its values (one per
    objective)."""

    state: TrialState
    values: tuple[float, ...] | None = None


def settle(trial: BaseTrial, spec: StudySpec, outcome: TrainResult | BaseException,
           history: list[EpochReport], saver: ModelSaver | None = None) -> Settled:
    """Record a training outcome on the trial (and its model, with a saver) in one
    transaction and say how it ends; other errors re-raise."""
    return settle_all([(trial, spec, outcome, history)], saver)[0]


Ended = tuple[BaseTrial, StudySpec, "TrainResult | BaseException", list["EpochReport"]]


def settle_all(ended: Sequence[Ended], saver: ModelSaver | None = None) -> list[Settled]:
    """settle for trials that ended together (a stack's members): every record in one
    transaction. A saver that ranks (keeps the best K) ranks a trial against those told
    before it: with one, settle and tell one trial at a time (finish_trials does)."""
    from ..training.train import TrainResult

    done = [_settled(*e, saver) for e in ended]
    write_attrs([w for _, w in done])
    for trial, spec, outcome, _ in ended:
        cap = spec.constraints.get("max_train_seconds")
        if cap is not None and isinstance(outcome, TrainResult):
            trial.set_constraint("train_seconds", outcome.member_seconds - cap)
    return [settled for settled, _ in done]


def _settled(trial: BaseTrial, spec: StudySpec, outcome: TrainResult | BaseException,
             history: list[EpochReport], saver: ModelSaver | None) -> tuple[Settled, AttrWrite]:
    from ..training.train import OutOfTime, StopTraining, TrainResult

    if isinstance(outcome, TrainResult):
        digest = outcome.weights_digest()
        values = objective_values(spec, outcome)
        more: dict[str, Any] = {}
        kept: dict[str, Any] = {}
        if saver is not None and isinstance(trial, optuna.Trial):
            if saver.admits(trial, values[0]):  # the file first, recorded with the results
                more, kept = saver.place(trial, model_writer(trial, outcome, digest))
            else:
                more = {"model_error": f"not kept: outside the {saver.keep} best when it "
                                       "finished (--keep-models)"}
        return Settled(TrialState.COMPLETE, values), AttrWrite(
            trial, {**result_attrs(outcome, digest), **more}, system_attrs=kept)
    if isinstance(outcome, StopTraining):
        return Settled(TrialState.PRUNED), AttrWrite(trial, partial_attrs(history, "pruned"))
    if isinstance(outcome, ConfigError | NonFiniteLossError | OutOfTime) or \
            is_out_of_memory(outcome):
        # nonfinite, invalid_config, out_of_memory: this config's outcome here, so it
        # counts as finished (never re-run in a loop); timeout: run again next time
        message = " ".join(str(outcome).split())[:500]
        if not isinstance(outcome, OutOfTime):
            log.warning("trial %d failed: %s", trial.number, message)
        return Settled(TrialState.FAIL), AttrWrite(
            trial, partial_attrs(history, fail_reason(outcome), message))
    raise outcome


def finish_trials(study: optuna.Study, ended: Sequence[Ended], saver: ModelSaver | None = None,
                  let_go: Callable[[optuna.Trial], None] | None = None) -> list[Settled]:
    """The end of a batch of one or of N, as start_trials is its start: the trials' records
    in one transaction (settle_all; one trial at a time where the saver ranks them against
    those told before), then each trial told, `let_go(trial)` called just before its tell
    (a worker's slots drop it from their heartbeat there). Until told, a trial that meets
    an error is failed by its runner (fail)."""
    ranked = saver is not None and saver.ranks
    groups = [[e] for e in ended] if ranked else [list(ended)]
    told: list[Settled] = []
    for group in groups:
        for (trial, *_), how in zip(group, settle_all(group, saver), strict=True):
            assert isinstance(trial, optuna.Trial), "only a live trial is told"
            if let_go is not None:
                let_go(trial)
            tell(study, trial, how)
            told.append(how)
    return told


def tell(study: optuna.Study, trial: optuna.Trial, settled: Settled) -> None:
    """Tell the study how a settled trial ended."""
    if settled.state == TrialState.COMPLETE:
        tell_trial(study, trial, list(settled.values or ()))
    else:
        tell_trial(study, trial, state=settled.state)


def fail(study: optuna.Study, trial: optuna.Trial, history: list[EpochReport],
         exc: BaseException) -> None:
    """Tell a trial FAIL with its curve so far, because its runner stops (`exc`: an
    interrupt or an error; such a trial is run again by the next run) or because training
    ended it (a divergence: `nonfinite`). The reason is one of the documented ones."""
    set_user_attrs(trial, partial_attrs(history, fail_reason(exc),
                                        f"{type(exc).__name__}: {exc}"[:500]))
    tell_trial(study, trial, state=TrialState.FAIL)


def fail_reason(exc: BaseException) -> str:
    """The fail_reason an error gives a trial (docs/runs-and-workers.md lists them all)."""
    from ..training.train import OutOfTime

    if isinstance(exc, NonFiniteLossError):
        return "nonfinite"
    if isinstance(exc, ConfigError):
        return "invalid_config"
    if is_out_of_memory(exc):
        return "out_of_memory"
    if isinstance(exc, OutOfTime):
        return "timeout"
    return "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
