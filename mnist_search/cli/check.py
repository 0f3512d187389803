"""`mnist-search check`: validate study files without touching storage, data or torch."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import USAGE, UsageError
from .common import friendly

__all__ = ["check_cmd"]


@click.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@friendly
def check_cmd(files: tuple[Path, ...]) -> None:
    """Check that `run` would accept each study file; one line per file.

    Valid means: the file parses, every key and value is allowed, every reference and grid
    point builds a valid training config, and the dataset is known or a directory. Exit 0
    when every file is valid, 2 otherwise.

    \b
    Example:
      mnist-search check studies/*.toml
    """
    from ..search.preflight import check_spec
    from ..spec import load_spec

    bad = 0
    for path in files:
        try:
            spec = load_spec(path)
            check_spec(spec)
        except UsageError as exc:
            bad += 1
            click.echo(f"error: {exc}")
            continue
        grid = f", {_n(spec.search.grid_size(), 'grid point')}" \
            if spec.sampler_kind == "grid" else ""
        if spec.replicates > 1:
            grid += f", {spec.replicates} replicates each"
        click.echo(f"{path}: ok: {_n(len(spec.references), 'reference')}, "
                   f"{_n(len(spec.search), 'search parameter')}{grid}, "
                   f"sampler {spec.sampler_kind}")
    if bad:
        raise SystemExit(USAGE)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
