"""The workers layer: processes that claim and train a study's trials, and run_study.

Submodules: pool (run_study; start, order and follow worker processes), spawn (starting a
run's worker processes early), launch (a worker process's entry point), worker (the process:
claim, train, tell), context (a worker's orders and open study), slots (training a claimed
set as stacked populations), signals (heartbeats, held stop signals), ledger (where a
worker's time goes), progress (following a running study: rate, ETA, best), confirm (a
search's best configs retrained with fresh seeds, run as any study is).
"""

__all__: list[str] = []  # nothing here: import the submodules
