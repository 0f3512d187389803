"""A worker's orders (sent by the pool as one JSON line) and its open study."""

from __future__ import annotations

import base64
import datetime
import logging
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from ..search.artifacts import ModelSaver
from ..search.lifecycle import study_seed
from ..search.queue import Claim
from ..search.reap import StaleTrialCallback
from ..search.study import make_pruner, make_sampler
from ..spec import StudySpec, load_spec
from ..storage.connect import make_storage

__all__ = ["DEFAULT_HEARTBEAT_S", "MAX_RETRY", "WorkerContext", "WorkerOrders", "open_worker",
           "pack_spec", "unpack_spec"]

DEFAULT_HEARTBEAT_S = 10
MAX_RETRY = 1  # a trial whose worker died is re-run once with the same params, label, seed


@dataclass(frozen=True)
class WorkerOrders:
    """What the pool tells a worker (as one JSON line)."""

    spec_path: str  # where the study came from (a path, or "<study>" for text or a dict)
    url: str
    target: int
    index: int = 0
    threads: int = 1
    device: str = "auto"
    # time.time() after which no trial starts, and running ones stop at their next epoch
    deadline: float | None = None
    heartbeat: int = DEFAULT_HEARTBEAT_S  # seconds; grace is 3x (0 disables heartbeats)
    log_level: int = logging.INFO
    error_file: str | None = None  # where the one-line fatal error goes for the parent
    workers: int = 1  # how many workers share the study (for a fair share per claim)
    population: int = 1  # slots: most trials trained at once
    mixed: bool | None = None  # whether trials of other shapes fill free slots (None: on a GPU)
    overrides: dict[str, Any] = field(default_factory=dict)  # [fixed] values set in code
    artifacts: str | None = None  # the folder models are saved in (None: no models)
    keep_models: int | None = None  # keep only the best K trials' model files (None: all)
    proposals: int | None = None  # most sampled trials asked at once (None: Claim's default)
    # time.monotonic() when the command started (CLOCK_MONOTONIC: one clock for every
    # process of the machine), for the start-up phases a worker logs at debug level
    started: float | None = None
    # the StudySpec itself (pack_spec), so a worker runs exactly the study its parent holds,
    # changed in memory or never a file; None: load spec_path (a worker started by hand)
    spec: str | None = None

    def claim_request(self, seed: int | None = None) -> Claim:
        return Claim(url=self.url, target=self.target, workers=self.workers,
                     population=self.population, heartbeat=self.heartbeat,
                     mixed=bool(self.mixed), proposals=self.proposals, seed=seed)


@dataclass(frozen=True)
class WorkerContext:
    """A worker's open study: its orders, the study file, the storage and the study, and
    where its models go."""

    orders: WorkerOrders
    spec: StudySpec
    storage: optuna.storages.RDBStorage
    study: optuna.Study
    seed_base: int  # the stored study's seed (fixed when it was created), read once
    saver: ModelSaver | None = None


def pack_spec(spec: StudySpec) -> str:
    """A StudySpec as text for a worker's orders (a pickle: the parent's own object, sent
    over the worker's stdin by the process that started it)."""
    return base64.b64encode(pickle.dumps(spec)).decode("ascii")


def unpack_spec(text: str) -> StudySpec:
    spec = pickle.loads(base64.b64decode(text))
    if not isinstance(spec, StudySpec):
        raise TypeError(f"orders carry a {type(spec).__name__}, not a StudySpec")
    return spec


def _run_began(orders: WorkerOrders) -> datetime.datetime:
    """The wall-clock time (local, as Optuna's datetime_start) the run began: its command's
    start, or this worker's for a worker started by hand."""
    ago = 0.0 if orders.started is None else max(0.0, time.monotonic() - orders.started)
    return datetime.datetime.now() - datetime.timedelta(seconds=ago)


def open_worker(orders: WorkerOrders) -> WorkerContext:
    """Load the study with heartbeats on and a sampler seeded apart from other workers'."""
    spec = unpack_spec(orders.spec) if orders.spec is not None else \
        load_spec(orders.spec_path).with_fixed(**orders.overrides)
    hb = orders.heartbeat or None
    storage = make_storage(
        orders.url, heartbeat_interval=hb, grace_period=None if hb is None else 3 * hb,
        retry_callback=StaleTrialCallback(max_retry=MAX_RETRY, since=_run_began(orders))
        if hb else None, reached=True, beats_from_creation=True)
    n_existing = len(optuna.load_study(study_name=spec.name, storage=storage)
                     .get_trials(deepcopy=False))
    study = optuna.load_study(study_name=spec.name, storage=storage,
                              sampler=make_sampler(spec, orders.index, n_existing),
                              pruner=make_pruner(spec))
    saver = None if orders.artifacts is None else \
        ModelSaver(Path(orders.artifacts), orders.keep_models)
    return WorkerContext(orders, spec, storage, study, study_seed(study, spec), saver)
