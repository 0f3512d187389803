"""mnist-search: Optuna hyperparameter search for PyTorch MLPs on MNIST-style data.

The public API, for your own Optuna code:

    import optuna, mnist_search as ms
    study = optuna.create_study(direction="maximize")
    study.optimize(ms.Objective("studies/search.toml", epochs=1), n_trials=3)

Only the version is defined eagerly, so `mnist-search --help` never imports torch or
optuna; each name below is imported on first use.

The package, by layer, each importing only from those below it (pyproject's import-linter
contract): cli; results and workers; search; training; data and spec; bundled (the study
files it ships) and space; config (TrainConfig), stats (replicate statistics), files
(writing a user's files safely), tables (results that show themselves), live (progress
where the user looks) and storage (the database); errors.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "TrainConfig": "mnist_search.config",
    "StudySpec": "mnist_search.spec",
    "load_spec": "mnist_search.spec",
    "load_data": "mnist_search.data",
    "train": "mnist_search.training.train",
    "TrainResult": "mnist_search.training.train",
    "Objective": "mnist_search.search.objective",
    "open_study": "mnist_search.search.study",
    "run_study": "mnist_search.workers.pool",
    "load_results": "mnist_search.results.rows",
    "load_model": "mnist_search.training.model_file",
    "rerun_trial": "mnist_search.search.rerun",
    "confirm": "mnist_search.workers.confirm",
    "summary": "mnist_search.results.display",
    "report": "mnist_search.results.display",
    "dashboard": "mnist_search.results.display",
}
__all__ = ["Objective", "StudySpec", "TrainConfig", "TrainResult", "__version__", "confirm",
           "dashboard", "load_data", "load_model", "load_results", "load_spec", "open_study",
           "report", "rerun_trial", "run_study", "summary", "train"]

if TYPE_CHECKING:
    from .config import TrainConfig
    from .data import load_data
    from .results.display import dashboard, report, summary
    from .results.rows import load_results
    from .search.objective import Objective
    from .search.rerun import rerun_trial
    from .search.study import open_study
    from .spec import StudySpec, load_spec
    from .training.model_file import load_model
    from .training.train import TrainResult, train
    from .workers.confirm import confirm
    from .workers.pool import run_study


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        with warnings.catch_warnings():
            # Optuna imports tqdm.auto, which warns in a kernel without ipywidgets; the
            # progress shown here then needs none (live.py), so the warning only misleads
            warnings.filterwarnings("ignore", message="IProgress not found")
            value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'mnist_search' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
