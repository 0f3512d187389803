"""Run the CLI of another commit next to this one, for before/after figures in one run.

`checkout(rev)` makes a temporary git worktree of `rev`; `cli(tree)` is the command line
that runs that tree's `mnist-search` with this venv's Python (the tree goes first on
PYTHONPATH, ahead of the editable install), and `env(tree)` the environment for it. Data
stay where this checkout keeps them.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_MAIN = ("import sys; from mnist_search.cli import main; sys.argv[0] = 'mnist-search'; "
         "sys.exit(main())")


@contextlib.contextmanager
def checkout(rev: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), rev],
                       check=True, capture_output=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(tree)], capture_output=True)


def cli(tree: Path | None) -> list[str]:
    """The command that runs `mnist-search` from `tree` (None: this checkout)."""
    return [sys.executable, "-c", _MAIN]


def env(tree: Path | None) -> dict[str, str]:
    data = os.environ.get("MNIST_SEARCH_DATA") or str(REPO / "data")
    extra = {} if tree is None else {"PYTHONPATH": str(tree)}
    return {**os.environ, "MNIST_SEARCH_DATA": str(Path(data).resolve()), **extra}
