"""A worker process's entry point (`python -m mnist_search.workers.launch ARGS`; spawn.Pool
starts it through `python -c`, to add the package's folder to sys.path first); worker.main
reads ARGS.

Two things happen before anything heavy is imported. A stop (Ctrl-C, SIGTERM, SIGHUP)
that comes while the process still imports torch ends it quietly: it holds no trial yet,
and a traceback per worker would bury the one line that matters. And on Linux the process
asks for SIGTERM when its parent dies (PR_SET_PDEATHSIG), so the workers of a run killed
with SIGKILL stop at their next safe point and tell their trials FAIL, instead of claiming
on with nobody following them. worker.main then installs the real stop handlers.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType

__all__ = ["run"]

PR_SET_PDEATHSIG = 1


def _quiet_exit(signum: int, _frame: FrameType | None) -> None:
    # At once, without the interpreter's teardown: nothing is held yet, and a second stop
    # (the run passes Ctrl-C on to its workers) landing in an atexit finalizer printed a
    # traceback there
    os._exit(128 + signum)


def follow_parent() -> None:
    """SIGTERM to this process when the process that started it dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the request: the signal will not come
        os.kill(os.getpid(), signal.SIGTERM)


def run() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _quiet_exit)
    follow_parent()
    from .worker import main

    code = main()
    # Everything is told and committed by now; skip the interpreter's teardown of torch and
    # friends (about 0.7 s), as multiprocessing's children do.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
