"""Writing a user's files safely: whole or not at all, at names nobody can plant.

Standard library only, so every layer can use it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import UsageError

__all__ = ["check_output", "replacing"]


def check_output(path: Path, option: str = "-o") -> None:
    """Before any work: `path` can be written as a file (its folder exists; it is no folder)."""
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a folder; give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{option} {path}: folder {folder} is not writable")


@contextlib.contextmanager
def replacing(target: Path) -> Iterator[Path]:
    """A path to write `target`'s new content to, inside a new private folder beside it
    (mkdtemp: made with O_EXCL, so nothing planted at a guessable name is followed). The
    file is renamed onto `target` when the block ends without an error; the folder and
    whatever is in it are removed either way."""
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp",
                                   dir=target.parent if str(target.parent) else "."))
    staged = folder / target.name
    try:
        yield staged
        os.replace(staged, target)
    finally:
        if os.path.lexists(staged):
            os.unlink(staged)
        os.rmdir(folder)  # only the folder this call made, empty by now
