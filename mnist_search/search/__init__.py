"""The search layer: Optuna studies from study files, the objective, storage, reaping.

Submodules: objective (Objective and the per-trial recording every runner shares), study
(open_study: create/resume, enqueue once), queue (finished counts, costs, claiming), storage
(URLs, SQLite set-up, the study lock, storage errors in one line), reap, summary (finished
trials by label), notes (dashboard notes), internals (the Optuna private API used, isolated).
"""
