"""The search layer: Optuna studies from study files, the objective, storage, reaping.

Submodules: objective (Objective, alone), lifecycle (a trial's life, the same for every
runner: ask, start, report, settle, tell, fail), study (open_study: create/resume, enqueue
once), queue (finished counts, costs, claiming under the study lock), storage (URLs, SQLite
set-up, the study lock, storage errors in one line), retry (storage calls through transient
faults), artifacts (model files), rerun, confirm, warm_start, preflight, reap, summary
(finished trials by label), notes (dashboard notes), internals (the Optuna private API used,
isolated).
"""

__all__: list[str] = []  # nothing here: import the submodules
