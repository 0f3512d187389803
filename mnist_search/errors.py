"""Errors a user can cause or meet, each carrying the exit code the CLI ends with.

Raised where the knowledge is (the study-file validator, the data loader, the storage layer);
the CLI catches MnistSearchError alone and prints its one-line message. Standard library only,
but for SQLAlchemy's URL parser, imported when a password is to be found in a storage URL.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["ConfigError", "DataError", "DataInputError", "DeviceError", "INCOMPLETE",
           "INTERRUPTED", "MnistSearchError", "NonFiniteLossError", "RUNTIME", "SpecError",
           "SpecFaults", "RedactingFilter", "StorageError", "StorageUrlError", "StudyConflict",
           "StudyNotFound", "USAGE", "UsageError", "is_out_of_memory", "printable", "redact",
           "redact_url", "remember_secrets"]

USAGE, RUNTIME, INTERRUPTED = 2, 1, 130
INCOMPLETE = 3  # a run stopped with work left (its --timeout, trials running elsewhere)


# A password in a URL's user info (`scheme://user:PASSWORD@host`, also without the scheme, as
# a mistyped --storage may be; SQLAlchemy allows '/' and quotes in it) or in its query
# (`?password=...`, libpq's spellings too). These catch URLs nobody registered; a storage URL
# the package was given is registered (`remember_secrets`), so its password is hidden whatever
# characters it holds (a space or a newline defeats any pattern).
_NETLOC_SECRET = re.compile(
    r"((?:[A-Za-z][A-Za-z0-9+.-]*://)?[^\s:/@'\"?#]*:)(?!//)([^\s@]+)(@)")
_QUERY_SECRET = re.compile(
    r"([?&;](?:password|passwd|pwd|pass|sslpassword|secret)=)([^&;\s]*)", re.IGNORECASE)
_SECRET_KEYS = ("password", "passwd", "pwd", "pass", "sslpassword", "secret")
_SECRETS: set[str] = set()  # passwords of the storage URLs this process was given
_SHORTEST_ANYWHERE = 4  # a shorter password is hidden only where it stands in a URL


def _url_secrets(url: str) -> set[str]:
    """The passwords in `url`, as typed and as percent-decoded: SQLAlchemy's own parser
    first, a lenient split (up to the last '@') for what it cannot parse."""
    from urllib.parse import quote, unquote

    found: set[str] = set()
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # not a URL SQLAlchemy reads: hide what stands where a password would
        head, _, rest = url.partition("://")
        netloc = (rest or head).rpartition("@")[0]
        if ":" in netloc:
            found.add(netloc.partition(":")[2])
    else:
        if parsed.password:
            found.add(str(parsed.password))
        for key, value in parsed.query.items():
            if key.lower() in _SECRET_KEYS:
                found.update([value] if isinstance(value, str) else value)
    found.update(m[2] for m in _QUERY_SECRET.finditer(url))
    return {v for s in found if s for v in (s, unquote(s), quote(s, safe=""))}


def remember_secrets(url: str) -> None:
    """Note the passwords in a storage URL, so that everything this process prints or logs
    from now on hides them. Called wherever a storage URL enters the package."""
    _SECRETS.update(_url_secrets(url))


def redact(text: str) -> str:
    """`text` with every password in every URL in it replaced by `***`: one redaction for
    everything this package prints or logs (messages, errors, log records)."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(f":{secret}@", ":***@")
        if len(secret) >= _SHORTEST_ANYWHERE:
            text = text.replace(secret, "***")
    text = _NETLOC_SECRET.sub(lambda m: f"{m[1]}***{m[3]}", text)
    return _QUERY_SECRET.sub(lambda m: f"{m[1]}***", text)


def redact_url(url: str) -> str:
    """A storage URL as it may be shown: its password (and password-like query values)
    replaced by `***`, whatever characters they hold."""
    for secret in sorted(_url_secrets(url), key=len, reverse=True):
        url = url.replace(f":{secret}@", ":***@").replace(f"={secret}", "=***")
    return redact(url)


def printable(text: str) -> str:
    """`text` as a terminal may be shown it: control characters (ESC, CR, a newline, C1
    codes) written as escapes, so a name read from a shared storage cannot clear the screen,
    retitle the window or forge a line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts a record's final message, arguments included."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def _shown(text: str, most: int = 120) -> str:
    """A value as a one-line message shows it: a 100,000-layer list is not a line."""
    return text if len(text) <= most else f"{text[:most - 20]}... ({len(text):,} characters)"


class MnistSearchError(Exception):
    """Base of every error this package explains in one line; exit code 1 (a runtime fault)."""

    exit_code: int = RUNTIME


class UsageError(MnistSearchError):
    """Bad input: a study file, an option, a name. Exit code 2, like click's usage errors."""

    exit_code = USAGE


class ConfigError(UsageError, ValueError):
    """A TrainConfig value outside what is allowed; `key` names the field."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"{key} = {_shown(repr(value))} is not allowed: expected {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


class SpecError(UsageError, ValueError):
    """A study-file problem, as one line naming the file, the key, the value and what is
    allowed."""

    @classmethod
    def bad_value(cls, source: str, key: str, value: Any, allowed: str) -> SpecError:
        shown = json.dumps(value) if isinstance(value, (str, list, dict, bool)) else repr(value)
        return cls(f"{source}: {key} = {_shown(shown)} is not allowed: expected {allowed}")


class SpecFaults:
    """The one way everything that reads a study file fails: one-line SpecErrors naming the
    file (`source`), the key, the value and what is allowed. The study-file validator and
    the search-space builder both derive from it."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, value: Any, allowed: str) -> SpecError:
        """`key = value` is not allowed: expected `allowed`."""
        return SpecError.bad_value(self.source, key, value, allowed)

    def error(self, text: str) -> SpecError:
        """Any other problem, in words."""
        return SpecError(f"{self.source}: {text}")

    def unknown(self, key: str, allowed: Sequence[str]) -> SpecError:
        return self.error(f"unknown key {key}; expected one of {', '.join(allowed)}")


class StudyConflict(UsageError):
    """The stored study does not match the study file (direction, changed file, seed)."""


class StudyNotFound(UsageError):
    """No study of that name in the storage."""


class StorageError(MnistSearchError):
    """A storage that cannot be used, or a fault while reading or writing it."""


class StorageUrlError(StorageError):
    """A storage URL that is not even well-formed: bad input, not a fault."""

    exit_code = USAGE


class DataError(MnistSearchError):
    """A missing, damaged or unfetchable data file."""


class DataInputError(UsageError, DataError):
    """A data folder or name the user gave that does not hold a dataset: bad input (exit
    2), where a damaged cache or a failed fetch is the environment's fault (exit 1)."""


class DeviceError(UsageError, ValueError):
    """A device that is not known, or not available on this machine."""


class NonFiniteLossError(MnistSearchError, RuntimeError):
    """The training loss became NaN or infinite; the run cannot continue."""

    def __init__(self, epoch: int, value: float) -> None:
        super().__init__(f"training loss became {value} in epoch {epoch}")
        self.epoch, self.value = epoch, value


def is_out_of_memory(exc: BaseException) -> bool:
    """An allocation that failed: MemoryError, or torch's allocator error (CPU or CUDA)."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text))
