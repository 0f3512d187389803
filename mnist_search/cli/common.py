"""What every command shares: one-line errors with exit codes, logging set-up, --storage.

Errors a user can cause end in one line on stderr: exit 2 for bad input (usage), 1 for
runtime faults, 130 on Ctrl-C; --debug shows the traceback instead.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from ..errors import (
    INCOMPLETE,
    INTERRUPTED,
    RUNTIME,
    MnistSearchError,
    RedactingFilter,
    printable,
    redact,
)

__all__ = ["INCOMPLETE", "INTERRUPTED", "RUNTIME", "OneLineGroup", "artifacts_option",
           "echo_json", "fail", "friendly", "internal_error", "quiet", "setup_logging",
           "storage_option", "use_storage"]

log = logging.getLogger("mnist_search")

F = TypeVar("F", bound=Callable[..., Any])
_URL_KEY = "mnist_search.storage_url"  # click.Context.meta: the URL of the running command


_MOST = 2000  # characters of an error line


def fail(message: str, code: int) -> NoReturn:
    # redacted before it is folded: a password may hold a newline
    one_line = printable("; ".join(ln.strip() for ln in redact(message).splitlines()
                                   if ln.strip()))
    if len(one_line) > _MOST:  # a stored value of millions of numbers is not a line
        one_line = f"{one_line[:_MOST - 40]}... ({len(one_line):,} characters)"
    click.echo(f"mnist-search: error: {one_line}", err=True)
    sys.exit(code)


def _storage_fault(exc: BaseException) -> str | None:
    """One line for a fault of the database layer, or None. Only consulted when optuna or
    sqlalchemy is loaded, so classifying an error never imports them."""
    if "sqlalchemy" not in sys.modules and "optuna" not in sys.modules:
        return None
    from ..storage.faults import explain, is_storage_fault

    if not is_storage_fault(exc):
        return None
    ctx = click.get_current_context(silent=True)
    url = ctx.meta.get(_URL_KEY, "(storage)") if ctx is not None else "(storage)"
    return explain(exc, url)


def friendly(fn: F) -> F:
    """Turn known errors into one line and an exit code; --debug shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool((click.get_current_context().find_root().obj or {}).get("debug", False))
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            if debug:
                raise
            fail("interrupted", INTERRUPTED)
        except MnistSearchError as exc:
            if debug:
                raise
            fail(str(exc), exc.exit_code)
        except MemoryError as exc:  # its message is often empty: say what it was
            if debug:
                raise
            fail(f"out of memory{': ' + str(exc) if str(exc).strip() else ''} (a smaller "
                 "dataset, batch or model, or fewer --workers, needs less)", RUNTIME)
        except Exception as exc:
            if debug:
                raise
            fail(_storage_fault(exc) or _unreadable(exc) or internal_error(exc), RUNTIME)

    return wrapper  # type: ignore[return-value]


def _unreadable(exc: BaseException) -> str | None:
    """One line for a stored value Optuna cannot turn back into a trial (a state or
    direction not in its enum, a bad timestamp, an unknown distribution, nesting too deep):
    a database edited outside Optuna. Only for errors raised inside Optuna or SQLAlchemy
    while a storage is in use."""
    if not isinstance(exc, (LookupError, ValueError, TypeError, RecursionError)):
        return None
    ctx = click.get_current_context(silent=True)
    url = ctx.meta.get(_URL_KEY) if ctx is not None else None
    tb, inside = exc.__traceback__, False
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        inside = inside or "/optuna/" in name or "/sqlalchemy/" in name
        tb = tb.tb_next
    if url is None or not inside:
        return None
    what = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
    return (f"{url}: a stored value cannot be read ({what}): the database was edited or "
            "damaged outside Optuna; restore it from a copy")


def internal_error(exc: BaseException) -> str:
    """One line for an error nobody foresaw: what it was, and how to see more."""
    text = " ".join(str(exc).split())[:300]
    return f"internal error: {type(exc).__name__}: {text} (run again with --debug for the " \
        "traceback)"


class OneLineGroup(click.Group):
    """A click group whose usage errors are one line, like every other error here:
    `mnist-search: error: <what is wrong> (see: <command> --help)`, exit 2."""

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(argv, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:  # a bare `mnist-search`: help
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else (prog_name or self.name)
            fail(f"{exc.format_message()} (see: {where} --help)", exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            fail("interrupted", INTERRUPTED)
        except Exception as exc:  # outside any command: option callbacks, say
            if "--debug" in argv:
                raise
            fail(internal_error(exc), RUNTIME)
        sys.exit(code if isinstance(code, int) else 0)


def quiet() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and (ctx.find_root().obj or {}).get("quiet", False))


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                           "%H:%M:%S"))
    handler.addFilter(RedactingFilter())  # a URL logged anywhere keeps its password hidden
    root = logging.getLogger("mnist_search")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


storage_option = click.option(
    "--storage", default=None, metavar="URL",
    help="Optuna storage URL [default: $MNIST_SEARCH_STORAGE or sqlite:///mnist_search.db].")


artifacts_option = click.option(
    "--artifacts", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Folder of the trials' models [default: $MNIST_SEARCH_ARTIFACTS, or beside a SQLite "
         "database as DATABASE.artifacts; a PostgreSQL storage needs one].")


def use_storage(storage: str | None) -> str:
    """Resolve the URL, remember it for error messages, and quiet Optuna under -q."""
    from ..storage.connect import resolve_url

    url = resolve_url(storage)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta[_URL_KEY] = url
    if quiet():
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    return url


def echo_json(value: Any, indent: int | None = None) -> None:
    """`value` on stdout as strict JSON: a diverged replicate's mean (nan) or an infinite
    loss becomes null, since NaN and Infinity are not JSON and jq, JavaScript's JSON.parse
    and most readers refuse the whole document over one of them. Other unknown types are
    written as their str()."""
    click.echo(json.dumps(_finite(value), indent=indent, default=str, allow_nan=False))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
