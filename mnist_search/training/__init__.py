"""The training layer: the MLP, the hand-written stacked step, and train(config) -> result.

Knows nothing of Optuna. Submodules: mlp (the MLP), engine (Stack: stacked models, their
epochs and members), step (the hand-written step over a stack), layout (its flat buffers),
regularizers (dropout, penalties, max-norm), members (a member's init and extraction),
graphs (the step as a CUDA graph), pixels (the CPU pixel order), optim (the optimizer rules
and schedules), epochs (reports and results of an epoch), population (the one epoch loop:
groups of any shapes, members joining and leaving), train (train and train_population, a
population of one group), model_file.
"""

__all__: list[str] = []  # nothing here: import the submodules
