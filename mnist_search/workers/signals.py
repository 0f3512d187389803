"""What keeps a worker's trials from being lost: heartbeats and held stop signals.

Heartbeats say a trial's worker is alive (a dead worker's trials go stale and are retried);
holding Ctrl-C/SIGTERM between ask and the training's try block means an interrupt never
leaves a trial RUNNING with nobody to tell it FAIL.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from types import FrameType

import optuna

__all__ = ["STOP_SIGNALS", "Heartbeat", "Mask", "hold_stop_signals", "raise_interrupt",
           "release_stop_signals"]

log = logging.getLogger(__name__)

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class Heartbeat:
    """Records the heartbeats of trials every `interval` seconds from a background thread."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_ids: Sequence[int],
                 interval: int) -> None:
        self.storage, self.trial_ids, self.interval = storage, list(trial_ids), interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

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


Mask = set[int | signal.Signals]


def hold_stop_signals() -> Mask:
    """Hold Ctrl-C/SIGTERM until release_stop_signals; returns the mask to restore."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def release_stop_signals(old_mask: Mask) -> None:
    """Restore the mask; a signal held meanwhile is raised right here."""
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    """A SIGTERM handler: the same clean stop as Ctrl-C (kill, a scheduler's stop)."""
    raise KeyboardInterrupt(f"signal {signum}")
