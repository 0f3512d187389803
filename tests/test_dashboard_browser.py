"""The dashboard as a person sees it: headless Chromium over a small finished study.

Needs Debian's chromium and chromium-driver (.ci/run installs them) and selenium.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request

import pytest
from test_concurrency import free_port

from helpers import exe, start_run, wait_for, write_study

pytestmark = pytest.mark.slow
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
NOTE_WORDS = "synthetic study seen through a browser"

STUDY = """
trials = 3
[sampler]
kind = "random"
[fixed]
dataset = DATA
epochs = 2
[search]
momentum = { low = 0.0, high = 0.9 }
[[reference]]
label = "browser-baseline"
group = "baseline"
"""


def browser(profile: str):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        return None, f"selenium is not installed ({exc})"
    if not (shutil.which(CHROMIUM) and shutil.which(DRIVER)):
        return None, "Debian chromium / chromium-driver are not installed"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1400,1000",
                f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(DRIVER), options=opts), ""


def test_dashboard_shows_trials_label_and_note(tmp_path, synthetic_dir):
    driver, why = browser(str(tmp_path / "profile"))
    if driver is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {why}")
        pytest.skip(why)
    spec = write_study(tmp_path / "web.toml", synthetic_dir, STUDY)
    spec.write_text(spec.read_text().replace('description = "test study"',
                                             f'description = "{NOTE_WORDS}"'))
    url = f"sqlite:///{tmp_path / 'w.db'}"
    proc = start_run(spec, url)
    assert proc.communicate(timeout=300) and proc.returncode == 0
    port = free_port()
    dash = subprocess.Popen([exe("mnist-search"), "dashboard", "--storage", url, "--port",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/dashboard/studies/1"
    try:
        def page_text(path: str, needle: str):
            driver.get(base + path)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                text = driver.find_element("tag name", "body").text
                if needle in text:
                    return text
                time.sleep(0.3)
            return None

        def up() -> bool:
            try:
                urllib.request.urlopen(base, timeout=5).close()
                return True
            except OSError:
                return False

        wait_for(up, 30, "the dashboard")
        trials_page = page_text("/trials", "3 Trials")
        assert trials_page is not None, "trial count not rendered"
        driver.save_screenshot(str(tmp_path / "trials.png"))
        assert "browser-baseline" in trials_page  # the reference label, as a user attr
        assert "784-128-64-10" in trials_page  # the architecture
        note_page = page_text("/note", NOTE_WORDS)
        assert note_page is not None, "note text not rendered"
        assert "browser-baseline" in note_page  # the summary table in the note
        driver.save_screenshot(str(tmp_path / "note.png"))
        assert (tmp_path / "trials.png").stat().st_size > 10_000
    finally:
        driver.quit()
        dash.terminate()
        dash.wait(timeout=30)
