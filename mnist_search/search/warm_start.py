"""Warm starts: a search that begins with the best configs of an earlier, related study.

`run --warm-start OTHER[:K]` (or `warm_start = "OTHER:K"` in the study file) enqueues the K
best COMPLETE trials of the stored study OTHER whose configs fit this study's search space,
as this study's parameters, each once (a trial records `warm_start = "OTHER#N"`, and a
config already enqueued, running or done is never enqueued again). Values that this study
fixes come from its own [fixed]; a config with a searched value outside this study's space
is skipped with a one-line reason. The enqueued trials run, are pruned and are told like
sampled ones, so the sampler learns from them.
"""

from __future__ import annotations

import json
import logging

import optuna
from optuna.trial import TrialState

from ..config import TrainConfig
from ..errors import StudyNotFound, UsageError, redact
from ..spec import StudySpec
from ..storage.internals import storage_of
from ..storage.lock import study_lock

__all__ = ["DEFAULT_WARM_START", "check_warm_start", "enqueue_warm_start", "parse_warm_start"]

log = logging.getLogger(__name__)

DEFAULT_WARM_START = 5  # configs taken when OTHER has no :K


def parse_warm_start(value: str) -> tuple[str, int]:
    """'OTHER' or 'OTHER:K' -> (OTHER, K); UsageError naming what is allowed."""
    name, _, count = value.rpartition(":")
    if not name or not count.isdigit():  # no ':K', or a name that holds ':' itself
        name, count = value, ""
    if not name.strip() or (count and int(count) < 1):
        raise UsageError(f"--warm-start {value!r}: expected STUDY or STUDY:K with K an "
                         "integer >= 1")
    return name, int(count) if count else DEFAULT_WARM_START


def check_warm_start(storage: optuna.storages.BaseStorage, url: str, name: str,
                     value: str) -> None:
    """Before anything is written: the value parses and names another stored study."""
    source, _ = parse_warm_start(value)
    if source == name:
        raise UsageError(f"--warm-start {value!r}: a study cannot warm-start itself")
    names = optuna.study.get_all_study_names(storage=storage)
    if source not in names:
        raise StudyNotFound(f"--warm-start: no study named {source!r} in {redact(url)}; it has: "
                            f"{', '.join(names) if names else 'no studies'}")


def enqueue_warm_start(study: optuna.Study, spec: StudySpec, url: str, value: str) -> int:
    """Enqueue the best fitting configs of the study `value` names; returns how many."""
    source_name, k = parse_warm_start(value)
    check_warm_start(storage_of(study), url, study.study_name, value)
    source = optuna.load_study(study_name=source_name, storage=storage_of(study))
    sign = -1.0 if source.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    ranked = sorted((t for t in source.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                     if t.values and "config" in t.user_attrs),
                    key=lambda t: (sign * t.values[0], t.number))
    with study_lock(url, spec.name):
        have = {t.user_attrs.get("warm_start") for t in study.get_trials(deepcopy=False)
                if t.state != TrialState.FAIL}
        added = 0
        for trial in ranked[:k]:
            origin = f"{source_name}#{trial.number}"
            try:
                params = spec.search.encode(TrainConfig(**trial.user_attrs["config"]))
            except (ValueError, TypeError) as exc:
                log.info("warm start: %s skipped: %s", origin, exc)
                continue
            if origin in have:
                continue
            study.enqueue_trial(params, user_attrs={"warm_start": origin,
                                                    "warm_start_params": json.dumps(params)})
            added += 1
    if added:
        log.info("warm start: enqueued %d of the %d best trials of %s", added,
                 min(k, len(ranked)), source_name)
    return added
