"""Helpers for tests that drive the real `mnist-search` command in subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna

BIN = Path(sys.executable).parent


def exe(name: str) -> str:
    return str(BIN / name)


def write_study(path: Path, data_dir: Path, body: str, *, name: str | None = None) -> Path:
    head = 'description = "test study"\nseed = 5\n'
    if name:
        head += f'name = "{name}"\n'
    path.write_text(head + body.replace("DATA", json.dumps(str(data_dir))))
    return path


def start_run(spec: Path, url: str, *args: str, env: dict | None = None,
              **popen: object) -> subprocess.Popen:
    return subprocess.Popen([exe("mnist-search"), "-q", "run", str(spec), "--storage", url,
                             *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def worker_pids(spec: Path) -> list[int]:
    """Live worker processes started for this study file (found by their command line)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"mnist_search.workers.launch" in c for c in cmd) and str(spec).encode() in cmd:
            pids.append(int(proc.name))
    return pids


def wait_for(predicate: Callable[[], object], timeout: float, what: str,
             every: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=url).get_trials()
    except KeyError:
        return []


def integrity(db: Path) -> str:
    con = sqlite3.connect(str(db))
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


@contextlib.contextmanager
def read_only_bind(source: Path, target: Path) -> Iterator[None]:
    """`target` as a read-only bind mount of `source` for the block: root ignores permission
    bits, but not a read-only mount. Skips the test where mounting is not allowed."""
    import pytest

    mounted = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(target)], check=False)
