"""Every way a run is stopped leaves no trial RUNNING: Ctrl-C through the Python API (which
raises KeyboardInterrupt, as study.optimize does), SIGHUP (a closed terminal, IPython ending
a `!mnist-search run`), a SIGKILLed parent (its workers stop by themselves), and a stop
while the workers still import (quiet)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from optuna.trial import TrialState
from test_crash import SLOW_STUDY, running_with_pid

from helpers import start_run, trials, wait_for, worker_pids, write_study


def _none_running(url: str) -> None:
    final = trials(url, "kill")
    assert final and not [t for t in final if t.state == TrialState.RUNNING]
    stopped = [t for t in final if t.state == TrialState.FAIL]
    assert stopped and all(t.user_attrs["fail_reason"] == "interrupted" for t in stopped)


def test_ctrl_c_in_python_raises_keyboard_interrupt_after_a_clean_stop(tmp_path,
                                                                       slow_synthetic_dir):
    spec = write_study(tmp_path / "kill.toml", slow_synthetic_dir, SLOW_STUDY)
    url = f"sqlite:///{tmp_path / 'k.db'}"
    script = textwrap.dedent(f"""
        import mnist_search as ms
        try:
            ms.run_study({str(spec)!r}, storage={url!r}, workers=2, progress=False)
        except KeyboardInterrupt as stop:
            print("raised", type(stop).__name__, stop.summary.interrupted)
        else:
            print("returned")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for(lambda: running_with_pid(url), 60, "a RUNNING trial")
    os.killpg(proc.pid, signal.SIGINT)  # as a kernel's interrupt reaches its children
    out, err = proc.communicate(timeout=60)
    assert out.strip() == "raised RunInterrupted True", out + err
    _none_running(url)


@pytest.mark.parametrize("to_group", [False, True])
def test_sighup_is_a_clean_stop(tmp_path, slow_synthetic_dir, to_group):
    spec = write_study(tmp_path / "kill.toml", slow_synthetic_dir, SLOW_STUDY)
    url = f"sqlite:///{tmp_path / 'k.db'}"
    proc = start_run(spec, url, "--workers", "2", start_new_session=True)
    wait_for(lambda: running_with_pid(url), 60, "a RUNNING trial")
    if to_group:
        os.killpg(proc.pid, signal.SIGHUP)
    else:
        proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    _none_running(url)


def test_workers_of_a_sigkilled_run_stop_and_fail_their_trials(tmp_path, slow_synthetic_dir):
    spec = write_study(tmp_path / "kill.toml", slow_synthetic_dir, SLOW_STUDY)
    url = f"sqlite:///{tmp_path / 'k.db'}"
    proc = start_run(spec, url, "--workers", "2", start_new_session=True)
    wait_for(lambda: running_with_pid(url), 60, "a RUNNING trial")
    assert len(worker_pids(spec)) == 2
    proc.kill()  # the parent alone: its workers are orphans now
    proc.communicate(timeout=30)
    wait_for(lambda: not worker_pids(spec), 60, "the orphaned workers to stop")
    _none_running(url)


def test_a_stop_while_the_workers_import_is_quiet(tmp_path, slow_synthetic_dir):
    spec = write_study(tmp_path / "kill.toml", slow_synthetic_dir, SLOW_STUDY)
    url = f"sqlite:///{tmp_path / 'k.db'}"
    proc = start_run(spec, url, "--workers", "2", start_new_session=True)
    wait_for(lambda: len(worker_pids(spec)) == 2, 30, "the workers to start")
    time.sleep(0.3)  # importing torch (about 1 s)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert not [t for t in trials(url, "kill") if t.state == TrialState.RUNNING]


def test_a_second_stop_while_a_worker_waits_for_orders_is_quiet(tmp_path, synthetic_dir):
    """A worker still warming up (no trial held) ends at once on a stop, even when a second
    stop follows (SIGTERM to the group, then the run's own Ctrl-C to its workers): no
    interpreter teardown for the second to land in."""
    from mnist_search.spec import load_spec
    from mnist_search.workers.spawn import Pool

    spec = write_study(tmp_path / "s.toml", synthetic_dir, SLOW_STUDY)
    for _ in range(3):
        pool = Pool(1, load_spec(spec), "cpu")
        proc = pool.procs[0]
        time.sleep(2.5)  # torch imported, the data loading or loaded: atexit work exists
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        # the quiet exit, for whichever stop Python handles first: a worker busy in a C call
        # (torch's import, the data's load on loaded cores) gets both before it runs a
        # handler, and Python runs pending handlers in signal-number order, SIGINT first
        assert proc.wait(timeout=30) in (128 + signal.SIGTERM, 128 + signal.SIGINT)
        pool.cancel()


def test_a_stop_python_swallows_is_raised_again_at_the_next_safe_point(capsys):
    """A Ctrl-C that lands in a weakref callback (an import's module-lock callback is one)
    is swallowed by Python ("Exception ignored"); the run command's handler remembers it, so
    the next safe point raises it, and no report of the swallowed one is printed."""
    import weakref

    from mnist_search.workers import signals

    saved = {sig: signal.getsignal(sig) for sig in signals.STOP_SIGNALS}
    hook = sys.unraisablehook
    try:
        signals.stop_on_signals()

        class Anything:
            pass

        thing = Anything()
        ref = weakref.ref(thing, lambda _ref: signals.raise_interrupt(signal.SIGINT, None))
        del thing  # the callback runs, raises, and Python swallows it
        assert ref() is None
        with pytest.raises(KeyboardInterrupt):
            signals.raise_if_stopped()
        signals.raise_if_stopped()  # raised once, not twice
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        sys.unraisablehook = hook
    assert "KeyboardInterrupt" not in capsys.readouterr().err
