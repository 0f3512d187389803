"""Studies from study files: create or resume, enqueue reference and grid trials once.

`open_study` is the public door: it creates the stored study with the file's direction (or
resumes it if it matches the file), enqueues every labelled reference trial and grid point
not already there, and returns the study with the file's sampler and pruner, ready for
`study.optimize(Objective(...))` or for the CLI's workers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ..config import is_int
from ..errors import ConfigError, StudyConflict
from ..spec import MAX_PLANNED, MAX_REPLICATES, REPLICATE_MARK, StudySpec, load_spec
from ..storage.connect import make_storage, resolve_url
from ..storage.lock import study_lock
from .lifecycle import queued_seeds, study_seed
from .notes import write_study_note
from .queue import identity_of, is_done, queue_order
from .warm_start import check_warm_start, enqueue_warm_start

__all__ = ["DEFAULT_SEARCH_TRIALS", "StudyConflict", "as_spec", "create_or_resume",
           "default_trials", "directions_of", "enqueue_pending", "grid_points", "make_pruner",
           "make_sampler", "open_study", "whole_replicates"]

log = logging.getLogger(__name__)

DEFAULT_SEARCH_TRIALS = 20


def make_sampler(spec: StudySpec, worker: int = 0, salt: int = 0) -> optuna.samplers.BaseSampler:
    """A sampler seeded from the study seed, the worker index and the trials already run.

    Mixing in the worker and the trial count stops parallel workers, or a resumed study,
    from replaying the same "random" start-up points (optuna #3255, #4412).
    """
    base = spec.sampler.get("seed", spec.seed)
    seed = (base * 1_000_003 + worker * 7919 + salt) % (2**31)
    kind = spec.sampler_kind
    if kind == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=spec.sampler.get("n_startup_trials", 10))
    if kind == "gp":  # Optuna's Gaussian-process sampler (torch and scipy, both here)
        return optuna.samplers.GPSampler(
            seed=seed, n_startup_trials=spec.sampler.get("n_startup_trials", 10))
    if kind == "cmaes":
        return optuna.samplers.CmaEsSampler(
            seed=seed, n_startup_trials=spec.sampler.get("n_startup_trials", 1))
    return optuna.samplers.RandomSampler(seed=seed)  # random; grid points are enqueued


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The file's pruner; none for several objectives, which Optuna cannot prune."""
    p, epochs = spec.pruner, int(spec.fixed.get("epochs", 5))
    if spec.multi_objective:
        return optuna.pruners.NopPruner()
    if p["kind"] == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.get("n_startup_trials", 5),
                                           n_warmup_steps=p.get("n_warmup_steps", 1))
    if p["kind"] == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.get("min_resource", 1),
                                              max_resource=epochs,
                                              reduction_factor=p.get("reduction_factor", 3))
    return optuna.pruners.NopPruner()


def grid_points(spec: StudySpec) -> list[dict[str, Any]]:
    """The Optuna parameters of every point of a grid study, in file order."""
    if spec.sampler_kind != "grid" or not spec.search:
        return []
    return spec.search.grid()


def default_trials(spec: StudySpec) -> int:
    planned = (len(spec.references) + len(grid_points(spec))) * spec.replicates
    if spec.trials is not None:
        return whole_replicates(spec, max(spec.trials, planned))
    return planned if spec.sampler_kind == "grid" or not spec.search else whole_replicates(
        spec, max(planned, DEFAULT_SEARCH_TRIALS))


def whole_replicates(spec: StudySpec, target: int) -> int:
    """`target` trials, raised so the sampled ones past the planned ones come in whole
    configs of `replicates` each: a config the sampler proposes is measured with all its
    seeds, never left with one run and its siblings queued past the end of the run."""
    planned = (len(spec.references) + len(grid_points(spec))) * spec.replicates
    sampled = target - planned
    if spec.replicates < 2 or spec.sampler_kind == "grid" or not spec.search or sampled <= 0:
        return target
    return planned + -(-sampled // spec.replicates) * spec.replicates


def directions_of(spec: StudySpec) -> list[optuna.study.StudyDirection]:
    return [optuna.study.StudyDirection.MAXIMIZE if d == "maximize" else
            optuna.study.StudyDirection.MINIMIZE for d in spec.directions]


def as_spec(study: str | Path | StudySpec, replicates: int | None = None) -> StudySpec:
    """A loaded, validated StudySpec; `replicates` (seeds per reference) is a "how", so it
    may override the file."""
    spec = study if isinstance(study, StudySpec) else load_spec(study)
    if replicates is None:
        return spec
    if not (is_int(replicates) and 1 <= replicates <= MAX_REPLICATES):
        raise ConfigError("replicates", replicates, f"an integer in [1, {MAX_REPLICATES}]")
    points = spec.search.grid_size() if spec.sampler_kind == "grid" else 0
    if (len(spec.references) + points) * replicates > MAX_PLANNED:
        raise ConfigError("replicates", replicates,
                          f"at most {MAX_PLANNED // max(1, len(spec.references) + points):,} "
                          f"for this study ({len(spec.references) + points:,} references and "
                          f"grid points; at most {MAX_PLANNED:,} trials planned up front)")
    return dataclasses.replace(spec, replicates=replicates)


def open_study(study: str | Path | StudySpec, storage: str | None = None, *,
               seed: int | None = None, force: bool = False, replicates: int | None = None,
               worker: int = 0, warm_start: str | None = None) -> optuna.Study:
    """Create or resume the stored study of a study file, with its references enqueued once.

    Args:
        study: a study-file path or a StudySpec.
        storage: an Optuna storage URL [default: $MNIST_SEARCH_STORAGE or
            sqlite:///mnist_search.db].
        seed: the study seed of a new study (a resumed one must match).
        force: resume even if the file changed since the study was created.
        replicates: seeds per reference trial, overriding the file.
        worker: mixed into the sampler's seed, so parallel processes sample apart.
        warm_start: "OTHER[:K]": enqueue the K best configs of the stored study OTHER that
            fit this one's space, once (default: the file's warm_start key).

    Raises StudyConflict when the stored study does not match the file.
    """
    spec = as_spec(study, replicates)
    url = resolve_url(storage)
    store = make_storage(url)
    warm = warm_start or spec.warm_start
    if warm:  # a bad value or a missing study is refused before the study is created
        check_warm_start(store, url, spec.name, warm)
    stored = create_or_resume(spec, url, store, seed=seed, force=force)
    added = enqueue_pending(stored, spec, url)
    if added:
        log.info("enqueued %d reference/grid trials", added)
    if warm:
        enqueue_warm_start(stored, spec, url, warm)
    if spec.multi_objective and spec.pruner["kind"] != "none":
        log.info("pruning is off for %s: Optuna cannot prune a trial with several objectives",
                 spec.name)
    write_study_note(stored, spec)
    n_existing = len(stored.get_trials(deepcopy=False))
    return optuna.load_study(study_name=spec.name, storage=store,
                             sampler=make_sampler(spec, worker, n_existing),
                             pruner=make_pruner(spec))


def create_or_resume(spec: StudySpec, url: str, storage: optuna.storages.RDBStorage, *,
                     seed: int | None = None, force: bool = False) -> optuna.Study:
    """Create the study, or resume it if the stored one matches the file."""
    with study_lock(url, spec.name):
        try:
            study = optuna.load_study(study_name=spec.name, storage=storage)
        except KeyError:
            study = optuna.create_study(study_name=spec.name, storage=storage,
                                        directions=directions_of(spec))
            attrs = {
                "spec_hash": spec.text_hash, "spec_path": spec.path,
                "description": spec.description, "seed": spec.seed if seed is None else seed,
                "objective": spec.objective, "objectives": list(spec.objectives),
                "sampler": spec.sampler_kind,
                "selection_on_test": spec.selects_on_test,
                "references": {r.label: {"group": r.group, "notebook_accuracy":
                                         r.notebook_accuracy, "notebook_loss":
                                         list(r.notebook_loss), "note": r.note}
                               for r in spec.references},
            }
            for key, value in attrs.items():
                study.set_user_attr(key, value)
            _name_metrics(study, spec)
            return study
    _check_resume(study, spec, seed, force)
    if study.metric_names is None:  # a study created before they were named
        _name_metrics(study, spec)
    return study


def _name_metrics(study: optuna.Study, spec: StudySpec) -> None:
    """The objectives' names on the study, so the dashboard's axes say "test_accuracy"
    where they said "Objective 0"."""
    import warnings

    with warnings.catch_warnings():  # set_metric_names is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(spec.objectives))


def _check_resume(study: optuna.Study, spec: StudySpec, seed: int | None, force: bool) -> None:
    stored = study.user_attrs
    if study.directions != directions_of(spec):
        stored_dirs = "/".join(d.name.lower() for d in study.directions)
        raise StudyConflict(f"study {spec.name!r} exists with direction {stored_dirs}, but "
                            f"{spec.path} says {'/'.join(spec.directions)}; rename the study "
                            "(name = ...) or use another --storage")
    if stored.get("spec_hash") not in (None, spec.text_hash) and not force:
        raise StudyConflict(f"{spec.path} changed since study {spec.name!r} was created "
                            f"(spec hash {stored.get('spec_hash')} -> {spec.text_hash}); "
                            "refusing to mix results: rename the study, or pass --force")
    if seed is not None and stored.get("seed", seed) != seed:
        raise StudyConflict(f"study {spec.name!r} was created with seed {stored.get('seed')}, "
                            f"not {seed}; drop --seed to resume it, or rename the study")


def enqueue_pending(study: optuna.Study, spec: StudySpec, url: str) -> int:
    """Enqueue every reference and grid point (x replicates) not already done, running or
    waiting. Identity is the label / grid key with its replicate, never parameter equality:
    the notebook's baseline and its momentum-0.0 run have equal parameters and both must
    run. Each carries seeds derived from its identity (lifecycle.queued_seeds), so one
    that was interrupted and is enqueued again trains exactly as it would have."""
    seed_base = study_seed(study, spec)
    with study_lock(url, spec.name):
        live = [t for t in study.get_trials(deepcopy=False)
                if t.state in (TrialState.RUNNING, TrialState.WAITING) or is_done(t)]
        have = {identity_of(t.user_attrs) for t in live}
        points = grid_points(spec)
        items: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for rep in range(1, spec.replicates + 1):
            items += [({"label": r.label if rep == 1 else f"{r.label}{REPLICATE_MARK}{rep}",
                        "group": r.group}, spec.reference_params(r)) for r in spec.references]
            items += [({"grid_point": json.dumps(point, sort_keys=True),
                        **({"replicate": rep} if rep > 1 else {})}, point) for point in points]
        added = 0
        for attrs, p in queue_order(spec, items):
            ident = identity_of(attrs)
            if ident not in have:
                rep = int(attrs.get("replicate", 1)) if "grid_point" in attrs else \
                    replicate_of(str(attrs["label"]))
                study.enqueue_trial(p, user_attrs={**attrs,
                                                   **queued_seeds(seed_base, str(ident), rep)})
                added += 1
    return added


def replicate_of(label: str) -> int:
    """'baseline#3' -> 3; 'baseline' -> 1."""
    _, mark, rep = label.rpartition(REPLICATE_MARK)
    return int(rep) if mark and rep.isdigit() else 1
