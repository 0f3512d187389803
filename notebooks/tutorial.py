# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # mnist-search in a notebook: the course notebook's questions, answered
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/)
# (in Colab: File, Open notebook, GitHub, then this repository and `notebooks/tutorial.ipynb`;
# once the repository's address is public the badge links the notebook directly as
# `https://colab.research.google.com/github/OWNER/REPO/blob/main/notebooks/tutorial.ipynb`)
#
# The course notebook trains a 784-128-64-10 MLP on MNIST with SGD and asks what L1/L2 on
# the second layer, dropout, depth, width and momentum do, from single runs. Here the same
# questions get replicated runs, a search selected on a validation holdout, and a
# confirmation with fresh seeds. Every step prints what it found.
#
# On Colab, install first (a GPU runtime trains the stacks as CUDA graphs):
#
# ```
# !pip install mnist-search            # or: !pip install git+<this repository's URL>
# ```

# %%
import os

import mnist_search as ms

# Where the data comes from: MNIST (fetched and verified on first use), or a folder of IDX
# files; the tests run this notebook on a small synthetic set through this variable.
DATA = os.environ.get("MNIST_SEARCH_TUTORIAL_DATA", "mnist")
QUICK = DATA != "mnist"  # a few epochs and trials, for a check rather than a result
STORAGE = os.environ.get("MNIST_SEARCH_TUTORIAL_STORAGE", "sqlite:///tutorial.db")
EPOCHS = 1 if QUICK else 5

# %% [markdown]
# ## 1. Train one model
# The notebook's baseline: SGD at lr 0.01, batch 64, on all 60,000 training images.

# %%
result = ms.train(ms.TrainConfig(dataset=DATA, hidden=(128, 64), epochs=EPOCHS))
print(f"test accuracy {result.test_accuracy:.2f}% after {len(result.epochs)} epochs, "
      f"{result.seconds:.1f} s")

# %% [markdown]
# ## 2. The notebook's 15 runs, as labelled trials
# Each reference runs exactly once (here with 2 seeds each, for an interval); the progress
# shows in this cell while it runs. Interrupting the kernel stops the run cleanly and raises
# `KeyboardInterrupt`, so "Run All" stops here.

# %%
notebook = ms.load_spec("notebook").with_fixed(dataset=DATA, epochs=EPOCHS)
run = ms.run_study(notebook, storage=STORAGE, replicates=2, workers=2, force=True)
run

# %% [markdown]
# ## 3. What each change did, with replicates
# Mean test accuracy of each label over its seeds, its 95% interval, and what the notebook
# reported where it reported one.

# %%
summary = ms.summary("notebook", STORAGE)
summary

# %% [markdown]
# ## 4. The report's figures
# Each figure comes with sentences computed from its numbers.

# %%
report = ms.report("notebook", storage=STORAGE)
report.figures[0] if report.figures else report

# %% [markdown]
# ## 5. A short joint search, selected on a validation holdout

# %%
search = ms.load_spec("search").with_fixed(dataset=DATA, epochs=EPOCHS,
                                           val_size=128 if QUICK else 10000)
found = ms.run_study(search, storage=STORAGE, trials=6 if QUICK else 40, workers=2)
found

# %% [markdown]
# ## 6. Confirm the winners with fresh seeds
# The winner's curse (how much the search flattered its pick) and Welch's t-test between
# the top two.

# %%
import optuna

study = optuna.load_study(study_name="search", storage=STORAGE)
confirmed = ms.confirm(study, top=2, seeds=2 if QUICK else 3)
confirmed

# %% [markdown]
# ## 7. Everything as a DataFrame

# %%
df = ms.load_results("search", STORAGE)
df[["number", "state", "test_accuracy", "val_accuracy"]].head()
