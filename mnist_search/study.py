"""Studies: create or resume from a spec, enqueue reference trials once, run workers.

`run_study` is what `mnist-search run` calls: it validates everything, prepares the study
in this process (so reference trials are enqueued exactly once, before any worker starts),
then starts N worker processes (mnist_search.worker) and follows their progress through
the storage until the study holds the requested number of finished trials.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from .config import CONFIG_FIELDS, TrainConfig, mlp_parameters
from .objective import DETERMINISTIC_FAILURES, parse_hidden
from .spec import StudySpec, hidden_str, load_spec, reference_params
from .storage import make_storage, resolve_url, study_lock

log = logging.getLogger(__name__)

DEFAULT_SEARCH_TRIALS = 20
DEFAULT_POPULATION = 16  # trials a worker claims and trains together at most


class StudyConflict(Exception):
    """The study in storage does not match the study file (direction, file changed, seed)."""


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
    if kind == "cmaes":
        return optuna.samplers.CmaEsSampler(
            seed=seed, n_startup_trials=spec.sampler.get("n_startup_trials", 1))
    return optuna.samplers.RandomSampler(seed=seed)  # random; grid points are enqueued


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    p, epochs = spec.pruner, int(spec.fixed.get("epochs", 5))
    if p["kind"] == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.get("n_startup_trials", 5),
                                           n_warmup_steps=p.get("n_warmup_steps", 1))
    if p["kind"] == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.get("min_resource", 1),
                                              max_resource=epochs,
                                              reduction_factor=p.get("reduction_factor", 3))
    return optuna.pruners.NopPruner()


def grid_points(spec: StudySpec) -> list[dict[str, Any]]:
    """The cartesian product of a grid study's lists, in file order."""
    if spec.sampler_kind != "grid" or not spec.search:
        return []
    names = list(spec.search)
    values = [[hidden_str(c) if n == "hidden" else c for c in spec.search[n].choices]
              for n in names]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def default_trials(spec: StudySpec) -> int:
    planned = len(spec.references) * spec.replicates + len(grid_points(spec))
    if spec.trials is not None:
        return max(spec.trials, planned)
    return planned if spec.sampler_kind == "grid" or not spec.search else max(
        planned, DEFAULT_SEARCH_TRIALS)


def selects_on_test(spec: StudySpec) -> bool:
    """A study that *searches* on test accuracy reports an optimistic best value."""
    return spec.objective == "test_accuracy" and bool(spec.search) and \
        spec.sampler_kind != "grid"


def open_study(spec: StudySpec, url: str, storage: Any, *, seed: int | None = None,
               force: bool = False) -> optuna.Study:
    """Create the study, or resume it if the stored one matches the file."""
    with study_lock(url, spec.name):
        try:
            study = optuna.load_study(study_name=spec.name, storage=storage)
        except KeyError:
            study = optuna.create_study(study_name=spec.name, storage=storage,
                                        direction=spec.direction)
            attrs = {
                "spec_hash": spec.text_hash, "spec_path": spec.path,
                "description": spec.description, "seed": spec.seed if seed is None else seed,
                "objective": spec.objective, "sampler": spec.sampler_kind,
                "selection_on_test": selects_on_test(spec),
                "references": {r.label: {"group": r.group, "notebook_accuracy":
                                         r.notebook_accuracy, "notebook_loss":
                                         list(r.notebook_loss), "note": r.note}
                               for r in spec.references},
            }
            for key, value in attrs.items():
                study.set_user_attr(key, value)
            return study
    _check_resume(study, spec, seed, force)
    return study


def _check_resume(study: optuna.Study, spec: StudySpec, seed: int | None, force: bool) -> None:
    stored = study.user_attrs
    want = optuna.study.StudyDirection.MAXIMIZE if spec.direction == "maximize" else \
        optuna.study.StudyDirection.MINIMIZE
    if study.direction != want:
        raise StudyConflict(f"study {spec.name!r} exists with direction "
                            f"{study.direction.name.lower()}, but {spec.path} says "
                            f"{spec.direction}; rename the study (name = ...) or use another "
                            "--storage")
    if stored.get("spec_hash") not in (None, spec.text_hash) and not force:
        raise StudyConflict(f"{spec.path} changed since study {spec.name!r} was created "
                            f"(spec hash {stored.get('spec_hash')} -> {spec.text_hash}); "
                            "refusing to mix results: rename the study, or pass --force")
    if seed is not None and stored.get("seed", seed) != seed:
        raise StudyConflict(f"study {spec.name!r} was created with seed {stored.get('seed')}, "
                            f"not {seed}; drop --seed to resume it, or rename the study")


def study_seed(study: optuna.Study, spec: StudySpec) -> int:
    return int(study.user_attrs.get("seed", spec.seed))


def is_done(trial: optuna.trial.FrozenTrial) -> bool:
    """Finished for counting purposes: COMPLETE, PRUNED, or FAILed by its own config."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and \
        trial.user_attrs.get("fail_reason") in DETERMINISTIC_FAILURES


def counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    return {
        "done": sum(is_done(t) for t in trials),
        "running": sum(t.state == TrialState.RUNNING for t in trials),
        "waiting": sum(t.state == TrialState.WAITING for t in trials),
        "failed": sum(t.state == TrialState.FAIL and not is_done(t) for t in trials),
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
    }


def _queued_values(spec: StudySpec, user_attrs: dict[str, Any]) -> dict[str, Any] | None:
    """Fixed values plus what a reference or grid point sets; None for a sampled trial."""
    label = user_attrs.get("label")
    ref = spec.reference(label) if label else None
    if ref is not None:
        values = dict(ref.values)
    elif user_attrs.get("grid_point"):
        values = json.loads(user_attrs["grid_point"])
    else:
        return None
    if isinstance(values.get("hidden"), str):
        values["hidden"] = parse_hidden(values["hidden"])
    return {**spec.fixed, **values}


def trial_cost(spec: StudySpec, user_attrs: dict[str, Any]) -> float:
    """Relative training cost of a (waiting) trial: parameters x epochs of its config.

    Reference trials are costed from their label, grid points from their values; anything
    else from the study's fixed values.
    """
    merged = _queued_values(spec, user_attrs) or dict(spec.fixed)
    return mlp_parameters(tuple(merged.get("hidden", (128, 64)))) * merged.get("epochs", 5)


def queued_shape(spec: StudySpec, user_attrs: dict[str, Any]) -> tuple | None:
    """The stack key (TrainConfig.stack_key) of a queued trial, from the file's values;
    None for a trial the sampler has yet to propose."""
    merged = _queued_values(spec, user_attrs)
    if merged is None:
        return None
    return TrainConfig(**{k: v for k, v in merged.items() if k in CONFIG_FIELDS}).stack_key()


def queue_order(spec: StudySpec, items: list[tuple[dict[str, Any], Any]]
                ) -> list[tuple[dict[str, Any], Any]]:
    """Trials of one shape together (they train as one stack), the costliest group first so
    the long work is not left for last, the file's order within a group. Workers claim
    from the front of the queue."""
    shapes = [queued_shape(spec, attrs) for attrs, _ in items]
    cost: dict[Any, float] = {}
    first: dict[Any, int] = {}
    for i, ((attrs, _), shape) in enumerate(zip(items, shapes, strict=True)):
        cost[shape] = cost.get(shape, 0.0) + trial_cost(spec, attrs)
        first.setdefault(shape, i)
    order = sorted(range(len(items)), key=lambda i: (-cost[shapes[i]], first[shapes[i]], i))
    return [items[i] for i in order]


def enqueue_pending(study: optuna.Study, spec: StudySpec, url: str) -> int:
    """Enqueue every reference (x replicates) and grid point not already done, running
    or waiting. Identity is the label / grid key, never parameter equality: the notebook's
    baseline and its momentum-0.0 run have equal parameters and both must run."""
    with study_lock(url, spec.name):
        live = [t for t in study.get_trials(deepcopy=False)
                if t.state in (TrialState.RUNNING, TrialState.WAITING) or is_done(t)]
        have = {t.user_attrs.get("label") for t in live} | \
            {t.user_attrs.get("grid_point") for t in live}
        _, params = reference_params(spec)
        items = [({"label": r.label if rep == 1 else f"{r.label}#{rep}", "group": r.group}, p)
                 for rep in range(1, spec.replicates + 1)
                 for r, p in zip(spec.references, params, strict=True)]
        items += [({"grid_point": json.dumps(point, sort_keys=True)}, point)
                  for point in grid_points(spec)]
        added = 0
        for attrs, p in queue_order(spec, items):
            if (attrs.get("label") or attrs.get("grid_point")) not in have:
                study.enqueue_trial(p, user_attrs=attrs)
                added += 1
    return added


@dataclass(frozen=True)
class RunSummary:
    study_name: str
    storage: str
    target: int
    counts: dict[str, int]
    best_value: float | None
    seconds: float
    interrupted: bool = False
    worker_errors: tuple[str, ...] = ()


def prepare(path: str | Path | StudySpec, *, trials: int | None, storage: str | None,
            seed: int | None, force: bool, replicates: int | None = None,
            ) -> tuple[StudySpec, str, optuna.Study, int]:
    """Validate the file, open/resume the study, enqueue references: everything before work."""
    spec = path if isinstance(path, StudySpec) else load_spec(path)
    if replicates is not None:  # how many seeds per reference: a "how", not a "what"
        spec = dataclasses.replace(spec, replicates=replicates)
    url = resolve_url(storage)
    study = open_study(spec, url, make_storage(url), seed=seed, force=force)
    added = enqueue_pending(study, spec, url)
    write_note(study, spec)
    target = trials if trials is not None else default_trials(spec)
    if added:
        log.info("enqueued %d reference/grid trials", added)
    if trials is not None and trials < len(spec.references) * spec.replicates:
        log.warning("--trials %d is fewer than the %d reference trials; the rest stay queued",
                    trials, len(spec.references) * spec.replicates)
    return spec, url, study, target


def run_study(path: str | Path, *, trials: int | None = None, workers: int = 1,
              timeout: float | None = None, storage: str | None = None, device: str = "auto",
              seed: int | None = None, force: bool = False, progress: bool | None = None,
              heartbeat: int | None = None, replicates: int | None = None,
              population: int = DEFAULT_POPULATION) -> RunSummary:
    """Run a study file to `trials` finished trials (in total) with `workers` processes."""
    from .runner import Pool, run_workers

    start = time.monotonic()
    spec = load_spec(path)  # a bad file is reported before any process starts
    resolve_url(storage)
    # Workers start now and import torch while this process opens the study; they get
    # their orders (or are cancelled, if there is nothing to do) once it is ready.
    pool = Pool(workers, max(1, (os.cpu_count() or 1) // workers), spec.path, device)
    interrupted, errors = False, []
    try:
        spec, url, study, target = prepare(spec, trials=trials, storage=storage, seed=seed,
                                           force=force, replicates=replicates)
        if counts(study)["done"] < target:
            interrupted, errors = run_workers(
                spec, url, target, pool=pool, device=device, timeout=timeout,
                progress=progress, heartbeat=heartbeat, population=population, study=study)
    finally:
        pool.cancel()  # no-op for workers that ran: they have exited
    write_note(study, spec)
    c = counts(study)
    try:
        best = study.best_value
    except ValueError:
        best = None
    return RunSummary(spec.name, url, target, c, best, time.monotonic() - start,
                      interrupted, tuple(errors))


def write_note(study: optuna.Study, spec: StudySpec) -> None:
    """The study's dashboard note: the file's description and a per-label summary table."""
    from optuna_dashboard import save_note

    from .report import collect, label_table

    lines = [f"# {spec.name}", "", spec.description, "",
             f"Objective: **{spec.objective}** ({spec.direction}); sampler {spec.sampler_kind}; "
             f"study seed {study_seed(study, spec)}; file `{Path(spec.path).name}`."]
    if selects_on_test(spec):
        lines.append("")
        lines.append("Selection uses test accuracy: the best value is optimistic.")
    rows = label_table(collect(study), [r.label for r in spec.references])
    if rows:
        lines += ["", "| label | n | mean test acc. (%) | 95% CI | notebook (%) |",
                  "| --- | --- | --- | --- | --- |"]
        for r in rows:
            ci = "" if r["ci95"] is None else f"+/- {r['ci95']:.2f}"
            nb = "" if r["notebook"] is None else f"{r['notebook']:.2f}"
            lines.append(f"| {r['label']} | {r['n']} | {r['mean']:.2f} | {ci} | {nb} |")
    save_note(study, "\n".join(lines))
