"""The search layer: a trial's life, the queue, and the study features built on them.

A trial's life: objective (Objective, alone), lifecycle (the same for every runner: ask,
start, report, settle, tell, fail), records (what a trial records), artifacts (model files as
Optuna artifacts), notes (dashboard notes).
The queue: queue (finished counts, costs, claiming under the study lock, the stale check).
Study features: study (open_study: create/resume, enqueue once), warm_start, preflight
(checks before a run), reap (dead workers' trials), rerun, confirm (fresh-seed replicates of
the best), summary (finished trials by label or config).
The database itself is the storage layer (mnist_search.storage).
"""

__all__: list[str] = []  # nothing here: import the submodules
