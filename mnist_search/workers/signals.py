"""What keeps a worker's trials from being lost: heartbeats and held stop signals.

Heartbeats say a trial's worker is alive (a dead worker's trials go stale and are retried);
holding Ctrl-C/SIGTERM between ask and the training's try block means an interrupt never
leaves a trial RUNNING with nobody to tell it FAIL.

A worker's handler never raises: it records the signal, and the worker raises
KeyboardInterrupt itself at safe points (between training batches, when it releases held
signals, while it waits). An exception raised by a handler lands wherever the main thread is:
inside a database call (SQLAlchemy then logs a traceback) or a weakref callback (which
swallows it, losing the stop). A signal mask would not do either: pthread_sigmask covers the
calling thread only, and a Ctrl-C sent to the whole process group reaches any thread.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

__all__ = ["STOP_SIGNALS", "Heartbeat", "WasHeld", "hold_stop_signals", "install_stop_handlers",
           "raise_if_stopped", "raise_interrupt", "record_stop", "release_stop_signals",
           "stop_on_signals", "stops_recorded"]

log = logging.getLogger(__name__)

# SIGHUP too: a closed terminal, or IPython ending a `!mnist-search run` cell, is a stop
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


class Heartbeat:
    """Records the heartbeats of trials every `interval` seconds from a background thread."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_ids: Sequence[int],
                 interval: int) -> None:
        self.storage, self.trial_ids, self.interval = storage, list(trial_ids), interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def add(self, trial_ids: Sequence[int]) -> None:
        self.trial_ids = [*self.trial_ids, *trial_ids]  # a new list: the thread reads the old

    def discard(self, trial_ids: Sequence[int]) -> None:
        self.trial_ids = [t for t in self.trial_ids if t not in trial_ids]

    def _beat(self) -> None:
        while True:
            for trial_id in self.trial_ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as exc:  # a missed beat is not fatal; the next may land
                    log.warning("heartbeat for trial id %d failed: %s", trial_id, exc)
            if self.stop.wait(self.interval):
                return

    def __enter__(self) -> Heartbeat:
        if self.interval:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()


WasHeld = bool  # were stop signals held already? what release_stop_signals restores


class _Held:
    held = False
    pending: int | None = None


def hold_stop_signals() -> WasHeld:
    """Hold Ctrl-C/SIGTERM until release_stop_signals; returns what to restore."""
    before, _Held.held = _Held.held, True
    return before


def release_stop_signals(was_held: WasHeld) -> None:
    """Restore holding as it was; a signal that came meanwhile is raised right here."""
    _Held.held = was_held
    if not was_held:
        raise_if_stopped()


def raise_if_stopped() -> None:
    """A safe point: raise KeyboardInterrupt if a stop signal came and none is held."""
    if _Held.pending is not None and not _Held.held:
        signum, _Held.pending = _Held.pending, None
        raise KeyboardInterrupt(f"signal {signum}")


def record_stop(signum: int, _frame: FrameType | None) -> None:
    """The worker's Ctrl-C/SIGTERM handler: remember the stop for the next safe point (a
    second signal before it is the same stop, not a second one)."""
    _Held.pending = signum


def install_stop_handlers() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, record_stop)


@contextlib.contextmanager
def stops_recorded() -> Iterator[None]:
    """record_stop as the Ctrl-C/SIGTERM handler inside the block (raise_if_stopped turns it
    into KeyboardInterrupt at safe points); the previous handlers after it. Handlers can only
    be set from the main thread: elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    install_stop_handlers()
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    """The run command's stop handler (Ctrl-C, SIGTERM from kill or a scheduler, SIGHUP):
    a clean stop, raised at once and remembered. Python swallows an exception raised inside
    a weakref callback or a __del__ ("Exception ignored in ..."); an import's module-lock
    callback is one, so a Ctrl-C landing there while the command imports was lost and the
    run went on. Remembered, it is raised again at the next safe point (raise_if_stopped)."""
    _Held.pending = signum
    raise KeyboardInterrupt(f"signal {signum}")


def stop_on_signals() -> None:
    """For the run command's process, from its start: raise_interrupt on every stop signal,
    and no "Exception ignored" report for a stop Python swallowed (it is remembered)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, raise_interrupt)

    def unraisable(info: sys.UnraisableHookArgs) -> None:
        if not isinstance(info.exc_value, KeyboardInterrupt):
            sys.__unraisablehook__(info)

    sys.unraisablehook = unraisable
