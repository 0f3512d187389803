"""The notebook experience with a real Jupyter kernel: the tutorial notebook runs top to
bottom on the tests' synthetic data and shows its progress, tables and figures; its .py
(jupytext) and .ipynb are the same notebook; an interrupted run raises KeyboardInterrupt in
the kernel, keeps every finished trial and leaves none RUNNING."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState
from test_crash import SLOW_STUDY

from helpers import trials, wait_for, write_study

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
jupytext = pytest.importorskip("jupytext")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

pytestmark = pytest.mark.slow


def test_the_py_and_the_ipynb_are_one_notebook():
    paired = jupytext.read(NOTEBOOKS / "tutorial.py")
    stored = nbformat.read(NOTEBOOKS / "tutorial.ipynb", as_version=4)
    assert [c.source for c in paired.cells] == [c.source for c in stored.cells]
    assert all(not c.get("outputs") for c in stored.cells)  # stored without outputs


def test_the_tutorial_runs_top_to_bottom(tmp_path, synthetic_dir, monkeypatch):
    monkeypatch.setenv("MNIST_SEARCH_TUTORIAL_DATA", str(synthetic_dir))
    monkeypatch.setenv("MNIST_SEARCH_TUTORIAL_STORAGE", f"sqlite:///{tmp_path / 't.db'}")
    nb = nbformat.read(NOTEBOOKS / "tutorial.ipynb", as_version=4)
    start = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    print(f"\nthe tutorial ran in {time.perf_counter() - start:.1f} s")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    said = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "IProgress" not in said  # tqdm's warning, without ipywidgets, is not the user's
    html = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    progress = [o for o in outputs if o.output_type == "display_data"]
    assert progress and "trials finished" in progress[0].data["text/plain"]  # in place
    confirming = [o.data["text/plain"] for o in progress
                  if o.data["text/plain"].startswith("search-confirm:")]
    assert confirming and "trials finished" in confirming[0]  # a run's, updated
    assert "starting" not in confirming[0]  # moved on: the display was updated in place
    assert any("<th>ci95</th>" in h for h in html)  # the per-label summary
    assert any("data:image/png;base64," in h for h in html)  # a figure inline
    assert any("Welch" in h for h in html)  # the confirm report
    nbformat.write(nb, tmp_path / "executed.ipynb")


def test_interrupting_the_kernel_raises_and_leaves_nothing_running(tmp_path,
                                                                   slow_synthetic_dir):
    from jupyter_client.manager import start_new_kernel

    spec = write_study(tmp_path / "kill.toml", slow_synthetic_dir, SLOW_STUDY)
    url = f"sqlite:///{tmp_path / 'k.db'}"
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path), env={**os.environ})
    try:
        code = textwrap.dedent(f"""
            import mnist_search as ms
            ms.run_study({str(spec)!r}, storage={url!r}, workers=2)
        """)
        msg_id = kc.execute(code)
        said: list[str] = []

        def running() -> bool:
            while kc.iopub_channel.msg_ready():  # what the cell shows, for the message
                msg = kc.get_iopub_msg(timeout=1)
                if msg["msg_type"] in ("stream", "error"):
                    said.append(str(msg["content"])[:300])
            return bool([t for t in trials(url, "kill") if t.state == TrialState.RUNNING
                         and "config" in t.user_attrs])

        try:
            wait_for(running, 120, "a RUNNING trial")
        except AssertionError as exc:
            states = [t.state.name for t in trials(url, "kill")]
            raise AssertionError(f"{exc}; the cell said {said}; trials {states}") from None
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=120)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = kc.get_shell_msg(timeout=120)
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "RunInterrupted"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    final = trials(url, "kill")
    assert not [t for t in final if t.state == TrialState.RUNNING]
    stopped = [t for t in final if t.state == TrialState.FAIL]
    assert stopped and all(t.user_attrs["fail_reason"] == "interrupted" for t in stopped)
