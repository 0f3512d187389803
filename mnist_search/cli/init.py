"""`mnist-search init`: the bundled study files, listed or copied out to edit."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from ..bundled import bundled_studies, study_summary
from ..errors import USAGE
from .common import fail, friendly

__all__ = ["init_cmd"]


@click.command("init")
@click.argument("name", required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write it [default: ./NAME.toml].")
@friendly
def init_cmd(name: str | None, output: Path | None) -> None:
    """Copy the bundled study NAME to a file to edit; without NAME, list the bundled studies.

    A bundled study also runs by name from any directory (`mnist-search run notebook`); a
    local NAME.toml wins over it. An existing file is never overwritten.

    \b
    Example:
      mnist-search init search -o my-search.toml
    """
    bundled = bundled_studies()
    if name is None:
        width = max(map(len, bundled), default=0)
        for key, path in bundled.items():
            click.echo(f"{key:<{width}}  {study_summary(path)}")
        return
    key = name.removesuffix(".toml")
    if key not in bundled:
        fail(f"{name}: no bundled study of that name; expected one of: {', '.join(bundled)}",
             USAGE)
    target = output or Path(f"{key}.toml")
    if target.exists():
        fail(f"{target}: exists already; choose another file with -o", USAGE)
    _write_new(target, bundled[key].read_bytes())
    click.echo(f"{target}: copied from the bundled study {key!r}; run it with: "
               f"mnist-search run {target}")


def _write_new(target: Path, data: bytes) -> None:
    """Write a new file whole (a temporary file beside it, linked into place), never
    replacing one that appeared meanwhile."""
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        fail(f"{target}: its folder {folder} does not exist", USAGE)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.link(tmp, target)  # fails if the target exists: nothing is overwritten
    except FileExistsError:
        fail(f"{target}: exists already; choose another file with -o", USAGE)
    finally:
        os.unlink(tmp)
