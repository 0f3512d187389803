"""The training layer: the MLP, the hand-written stacked step, and train(config) -> result.

Knows nothing of Optuna. Submodules: model, engine, train.
"""
