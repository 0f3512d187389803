"""Where a worker's time goes: its sampler, its storage calls, and the rest (training).

A search's wall is training plus what surrounds it; on a fast device the sampler (TPE reads
every finished trial for each proposal) and the storage can be most of it. The ledger times
the sampler's calls as the worker's study makes them, minus the storage reads they make
(counted as storage), and the storage calls this worker's main thread makes (its heartbeat
thread overlaps training and is left out). A worker logs it as it ends, at debug level
(`run -v`); bench/bench_search.py --shares sums the workers' lines.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import optuna

from ..storage.retry import storage_seconds

__all__ = ["SAMPLER_CALLS", "Ledger"]

# What Optuna calls on a study's sampler around a trial (the rest are set-up and helpers).
SAMPLER_CALLS = ("infer_relative_search_space", "sample_relative", "sample_independent",
                 "before_trial", "after_trial")


class Ledger:
    """Seconds in the sampler (its own), in storage calls, and in all, since it was made."""

    def __init__(self, storage: object) -> None:
        self.storage = storage  # (its backend: the retrying storage counts its seconds)
        self.started = time.perf_counter()
        self.storage_at_start = storage_seconds(storage)
        self.sampler = 0.0
        self._depth = 0  # a sampler call made by another is the outer call's time

    def time_sampler(self, sampler: optuna.samplers.BaseSampler) -> None:
        """Time this sampler's calls from now on (the instance's own methods are wrapped,
        so it stays the sampler it was for every isinstance check)."""
        for name in SAMPLER_CALLS:
            setattr(sampler, name, self._timed(getattr(sampler, name)))

    def _timed(self, call: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(call)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return call(*args, **kwargs)
            self._depth += 1
            start, storage = time.perf_counter(), storage_seconds(self.storage)
            try:
                return call(*args, **kwargs)
            finally:
                self._depth -= 1
                spent = storage_seconds(self.storage) - storage
                self.sampler += time.perf_counter() - start - spent
        return timed

    def shares(self) -> tuple[float, float, float]:
        """(wall, sampler, storage) seconds so far."""
        return (time.perf_counter() - self.started, self.sampler,
                storage_seconds(self.storage) - self.storage_at_start)

    def line(self) -> str:
        wall, sampler, storage = self.shares()
        rest = wall - sampler - storage
        return (f"time in all {wall:.3f} s, sampler {sampler:.3f} s, storage "
                f"{storage:.3f} s, the rest (training, waits) {rest:.3f} s")
