"""Writing a user's files safely: whole or not at all, at names nobody can plant.

Standard library only, so every layer can use it.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import UsageError

__all__ = ["check_output", "refuse_special", "replacing"]


_SQLITE_MAGIC = b"SQLite format 3\x00"
# Files SQLite and this package keep beside a database: a stray one would be read as its
# journal, or taken for its lock.
_BESIDE = ("-wal", "-shm", "-journal", ".lock", ".artifacts")


def check_output(path: Path, option: str = "-o", *, force: bool = False,
                 keep: Sequence[Path] = ()) -> None:
    """Before any work: `path` can be written as a file. Its folder exists; it is no folder.

    What is never replaced, --force or not: anything that is not a regular file (a device,
    a pipe: written to as root it would become a file), an SQLite database, a study file
    (.toml), and whatever belongs to a path of `keep` (a database with its -wal, -shm and
    lock files beside it; a folder with everything under it). Any other existing file is
    replaced only with `force`, as `init` refuses to overwrite without it.
    """
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a folder; give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{option} {path}: folder {folder} is not writable")
    owner = _kept_by(path, keep)
    if owner is not None:
        raise UsageError(f"{option} {path}: belongs to the study's storage ({owner}) and is "
                         "never replaced; give another file name (nothing was written)")
    if not os.path.lexists(path):
        return
    refuse_special(path, option)
    if path.exists() and (path.suffix == ".toml" or _is_database(path)):
        what = "a study file" if path.suffix == ".toml" else "an SQLite database"
        raise UsageError(f"{option} {path}: is {what} and is never replaced; give another "
                         "file name (nothing was written)")
    if not force:
        raise UsageError(f"{option} {path}: exists already; give a new file name, or --force "
                         "to replace it (nothing was written)")


def refuse_special(path: Path, option: str = "-o") -> None:
    """Refuse a path that stands for something other than a regular file (a device, a pipe,
    a socket, /dev/stdout): a rename onto it would replace the device itself."""
    try:
        mode = path.stat().st_mode
    except OSError:  # nothing there, or a dangling link: the link is what gets replaced
        return
    if not stat.S_ISREG(mode):
        raise UsageError(f"{option} {path}: is not a regular file (a device, a pipe or a "
                         "socket); give a file name (nothing was written)")


def _is_database(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except OSError:
        return False


def _real(path: Path) -> Path:
    """`path` with its folder's links resolved, and its own name kept: what a rename in
    that folder replaces."""
    return Path(os.path.realpath(path.parent if str(path.parent) else ".")) / path.name


def _kept_by(path: Path, keep: Sequence[Path]) -> Path | None:
    out = _real(path)
    for kept in keep:
        real = _real(kept)
        if real == out or real in out.parents or (out.parent == real.parent and any(
                out.name == real.name + end for end in _BESIDE)):
            return kept
    return None


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
        refuse_special(target)  # checked again: it may have appeared while the file was made
        os.replace(staged, target)
    finally:
        if os.path.lexists(staged):
            os.unlink(staged)
        os.rmdir(folder)  # only the folder this call made, empty by now
