"""A worker's slots: up to K claimed trials training at once, refilled as trials end.

Claimed trials join a training.Population at its next epoch boundary: trials of one shape
that join together train stacked, with one shared batch order, recorded in each trial's
config (order_seed; with `mixed`, all of a population's trials share one order and also
record order_skip, the epochs of it drawn before they joined) with the `stack` it trained
in, so any of them re-runs exactly. Each trial has its own init, dropout masks, lr,
momentum and penalty. Per-epoch values go to each trial's own reporter, so pruning drops
just that member, and a trial that ends (finished, pruned, diverged, out of time) is told
at once, freeing its slot for the next claim. Every trial is started, reported and
settled by the same code as search.Objective.

Mixing shapes (`mixed`) keeps the slots full of whatever the sampler proposes; without it
a worker claims again only once its population is empty, as on a CPU, where trials of
different shapes gain nothing from training side by side.
"""

from __future__ import annotations

import logging
from types import TracebackType

import optuna

from ..config import TrainConfig
from ..errors import ConfigError
from ..search.lifecycle import (
    EpochReporter,
    configure_trials,
    fail,
    finish_trials,
    replicate_sampled,
    start_trials,
    trial_ids,
)
from ..storage.faults import describe
from ..training.population import Population, data_key
from ..training.train import EpochReport, TrainResult, load_for
from .context import WorkerContext
from .signals import Heartbeat, hold_stop_signals, raise_if_stopped, release_stop_signals

__all__ = ["Slots"]

log = logging.getLogger(__name__)


class Slots:
    """Up to `size` trials of one worker in training; use as a context manager: on an
    error or an interrupt it tells every unfinished trial FAIL before re-raising."""

    def __init__(self, ctx: WorkerContext, size: int, mixed: bool) -> None:
        self.ctx, self.size, self.mixed = ctx, size, mixed
        self.populations: list[Population[int]] = []
        self.trials: dict[int, optuna.Trial] = {}
        self.reporters: dict[int, EpochReporter] = {}
        self.heartbeat = Heartbeat(ctx.storage, [], ctx.orders.heartbeat)

    def __len__(self) -> int:
        return len(self.trials)

    @property
    def free(self) -> int:
        """Slots a claim may fill now."""
        if not self.mixed and self.trials:
            return 0
        return self.size - len(self.trials)

    def __enter__(self) -> Slots:
        self.heartbeat.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc is not None:
                hold_stop_signals()
                self._fail_all(exc)
        finally:
            self.heartbeat.__exit__(kind, exc, tb)

    def join(self, trials: list[optuna.Trial]) -> None:
        """Start claimed trials (with stop signals held) and add them to a population: the
        lifecycle's two start verbs, with the population's joining between them."""
        spec = self.ctx.spec
        for t in trials:
            self.trials[t.number] = t
            self.reporters[t.number] = EpochReporter(t, spec)
        self.heartbeat.add(trial_ids(trials))
        configured = configure_trials(trials, spec, self.ctx.orders.device, self.ctx.seed_base)
        for refused, error in configured.refused:
            self._refuse(self.trials[refused.number], error)
        pending, starts = configured.pending, []
        while pending:
            # A population shares one batch size and data: claims that differ in those
            # (a searched batch_size, say) go to populations of their own.
            key = data_key(pending[0][1])
            pop = self._population_for(pending[0][1])
            fits = [(m, c) for m, c in pending if data_key(c) == key]
            pending = [(m, c) for m, c in pending if data_key(c) != key]
            joined = pop.add([(m.number, c) for m, c in fits])
            for (member, _), config in zip(fits, joined, strict=True):
                stack = pop.stack_of(member.number)  # the joined config: what `rerun` trains
                starts.append((member, config, {"population_size": len(stack),
                                                "stack": stack}))
        start_trials(spec, configured, starts)  # every trial's start in one transaction
        for t in trials:  # a sampled config's other seeds, queued for the next claims
            if t.number in self.trials:  # (not one refused above)
                replicate_sampled(t, spec, self.ctx.seed_base)

    def _refuse(self, trial: optuna.Trial, exc: ConfigError) -> None:
        """Fail a claimed trial that cannot be built, alone: the search goes on."""
        self.trials.pop(trial.number)
        reporter = self.reporters.pop(trial.number)
        self.heartbeat.discard(trial_ids([trial]))
        finish_trials(self.ctx.study, [(trial, reporter.spec, exc, [])])

    def _population_for(self, config: TrainConfig) -> Population[int]:
        for pop in self.populations:
            if pop.fits(config):
                return pop
        # Mixing shares one batch order (one graph on a GPU); otherwise each stack keeps
        # its own, so a result does not depend on which trials shared this worker.
        # On a GPU, mixed trials of one depth also stack across widths (padded buckets);
        # on a CPU padding costs more than stacking gains (bench/bench_mixed.py).
        pop = Population[int](load_for(config, config.device), config.device,
                              config.seed if self.mixed else None,
                              bucket=self.mixed and config.device.startswith("cuda"))
        self.populations.append(pop)
        return pop

    def run_epoch(self) -> None:
        """One epoch of every population; tell the trials that ended with it."""
        for pop in self.populations:
            ended = pop.run_epoch(self._report, deadline=self.ctx.orders.deadline,
                                  between_batches=raise_if_stopped)
            was_held = hold_stop_signals()  # telling finished trials is not interrupted
            self._tell(ended)
            release_stop_signals(was_held)
        self.populations = [p for p in self.populations if len(p)]

    def _report(self, number: int, report: EpochReport) -> None:
        self.reporters[number](report)

    def _tell(self, ended: list[tuple[int, TrainResult | BaseException]]) -> None:
        """Finish the trials that ended (lifecycle.finish_trials); each leaves the slots
        and the heartbeat just before its tell. Until told, a trial is failed on an error."""
        def let_go(trial: optuna.Trial) -> None:
            self.trials.pop(trial.number)
            self.reporters.pop(trial.number)
            self.heartbeat.discard(trial_ids([trial]))

        finish_trials(self.ctx.study, [(self.trials[n], self.reporters[n].spec, outcome,
                                        self.reporters[n].history) for n, outcome in ended],
                      self.ctx.saver, let_go)

    def _fail_all(self, exc: BaseException) -> None:
        for number, trial in list(self.trials.items()):
            try:
                fail(self.ctx.study, trial, self.reporters[number].history, exc)
            except Exception as tell_exc:  # report the original error, not this one
                log.warning("could not mark trial %d FAIL: %s", trial.number,
                            describe(tell_exc, self.ctx.orders.url))
        self.trials.clear()
