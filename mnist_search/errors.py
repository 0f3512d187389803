"""Errors a user can cause or meet, each carrying the exit code the CLI ends with.

Raised where the knowledge is (the study-file validator, the data loader, the storage layer);
the CLI catches MnistSearchError alone and prints its one-line message. Standard library only.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["ConfigError", "DataError", "DeviceError", "INCOMPLETE", "INTERRUPTED",
           "MnistSearchError", "NonFiniteLossError", "RUNTIME", "SpecError", "SpecFaults",
           "RedactingFilter", "StorageError", "StorageUrlError", "StudyConflict",
           "StudyNotFound", "USAGE", "UsageError", "is_out_of_memory", "redact"]

USAGE, RUNTIME, INTERRUPTED = 2, 1, 130
INCOMPLETE = 3  # a run stopped with work left (its --timeout, trials running elsewhere)


# A password in a URL's user info (`scheme://user:PASSWORD@host`, also without the scheme, as
# a mistyped --storage may be; SQLAlchemy allows '/' in it) or in its query (`?password=...`,
# libpq's spellings too).
_NETLOC_SECRET = re.compile(
    r"((?:[A-Za-z][A-Za-z0-9+.-]*://)?[^\s:/@'\"?#]*:)(?!//)([^\s@'\"]+)(@)")
_QUERY_SECRET = re.compile(
    r"([?&;](?:password|passwd|pwd|pass|sslpassword|secret)=)([^&;\s'\"]*)", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with every password in every URL in it replaced by `***`: one redaction for
    everything this package prints or logs (messages, errors, log records)."""
    text = _NETLOC_SECRET.sub(lambda m: f"{m[1]}***{m[3]}", text)
    return _QUERY_SECRET.sub(lambda m: f"{m[1]}***", text)


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
