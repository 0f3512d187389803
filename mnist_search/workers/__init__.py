"""The workers layer: processes that claim and train a study's trials, and run_study.

Submodules: pool (run_study; start, order and follow worker processes), worker (the process:
claim, train, tell), context (a worker's orders and open study), slots (training a
claimed set as stacked populations), signals (heartbeats, held stop signals).
"""

__all__: list[str] = []  # nothing here: import the submodules
