"""mnist-search: Optuna hyperparameter search for PyTorch MLPs on MNIST-style data.

Only the version is defined eagerly, so `mnist-search --help` never imports torch or
optuna; the Python API is loaded on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_results", "run_study"]


def __getattr__(name: str) -> Any:
    if name == "load_results":
        from .results import load_results

        return load_results
    if name == "run_study":
        from .study import run_study

        return run_study
    raise AttributeError(f"module 'mnist_search' has no attribute {name!r}")
