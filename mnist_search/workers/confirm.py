"""`confirm`: a search's best configs retrained with fresh seeds, run as any study is.

search.confirm says what is confirmed (a study of references "trial-N", N replicates each)
and reads the result; this module runs it through run_study, so the replicates are claimed,
stacked by shape, spread over --workers, shown as progress and told through the same
lifecycle as every trial of a run.
"""

from __future__ import annotations

import optuna

from ..search.confirm import (
    ConfirmReport,
    confirm_spec,
    confirm_url,
    confirmed,
    fail_left_running,
)
from ..search.queue import identity_of, is_done
from ..spec import StudySpec
from .pool import run_study

__all__ = ["confirm"]


def confirm(study: optuna.Study, *, top: int = 1, seeds: int = 3, device: str | None = None,
            progress: bool | None = None, workers: int = 1) -> ConfirmReport:
    """Retrain the `top` best configs of `study` with `seeds` fresh seeds each, in
    "<study>-confirm" beside it, with `workers` processes; replicates stored by an earlier
    confirm are reused. Ctrl-C stops it as it stops a run (RunInterrupted)."""
    url = confirm_url(study)
    spec, picked = confirm_spec(study, top, seeds, device)
    trained_on = device or str(picked[0].user_attrs["config"].get("device") or "auto")
    try:
        store = optuna.load_study(study_name=spec.name, storage=url)
    except KeyError:
        store = None
    if store is not None:
        fail_left_running(store)
    study.set_user_attr("confirm_study", spec.name)
    run_study(spec, trials=_target(store, spec), workers=workers, storage=url,
              device=trained_on, force=True, progress=progress, keep_models=0)
    store = optuna.load_study(study_name=spec.name, storage=url)
    store.set_user_attr("confirms", study.study_name)
    return confirmed(study, store, picked, seeds)


def _target(store: optuna.Study | None, spec: StudySpec) -> int:
    """Finished trials the confirm study must hold: the ones this confirm needs, on top of
    those earlier confirms finished for other configs or more seeds."""
    needed = len(spec.references) * spec.replicates
    if store is None:
        return needed
    wanted = {f"label={r.label}" if rep == 1 else f"label={r.label}#{rep}"
              for r in spec.references for rep in range(1, spec.replicates + 1)}
    others = {identity_of(t.user_attrs) or f"trial {t.number}"
              for t in store.get_trials(deepcopy=False) if is_done(t)} - wanted
    return needed + len(others)
