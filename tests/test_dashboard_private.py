"""`mnist-search dashboard` stays on loopback and keeps optuna-dashboard's safe defaults."""

from __future__ import annotations

import subprocess
import urllib.request
from pathlib import Path

import optuna
from test_concurrency import free_port

from helpers import exe, wait_for


def listeners(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, hexport = fields[1].rsplit(":", 1)
            if int(hexport, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.append(addr)
    return found


def test_dashboard_binds_loopback_only_and_sends_csp(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    optuna.create_study(study_name="d", storage=url)
    port = free_port()
    proc = subprocess.Popen([exe("mnist-search"), "dashboard", "--storage", url, "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def page():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard", timeout=5) as r:
                    return r.headers, r.read()
            except OSError:
                return None

        headers, body = wait_for(page, 60, "the dashboard page")
        assert listeners(port) == ["0100007F"]  # 127.0.0.1 and nothing else
        csp = headers.get("Content-Security-Policy", "")
        assert "default-src 'self'" in csp and "object-src 'none'" in csp
        # served in-process: no optuna-dashboard command (with or without --allow-unsafe)
        # below it, and raw HTML in notes stays off
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/meta", timeout=5) as r:
            assert b'"allow_unsafe": false' in r.read().replace(b'":false', b'": false')
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_other_host_warns_that_there_is_no_authentication(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    optuna.create_study(study_name="d", storage=url)
    port = free_port()
    proc = subprocess.Popen([exe("mnist-search"), "dashboard", "--storage", url, "--port",
                             str(port), "--host", "127.0.0.2"], stderr=subprocess.PIPE, text=True)
    try:
        said: list[str] = []
        while len(said) < 3 and not any("no authentication" in line for line in said):
            said.append(proc.stderr.readline())  # among its first lines, before it serves
        assert "no authentication" in said[-1], said
    finally:
        proc.terminate()
        proc.wait(timeout=30)
