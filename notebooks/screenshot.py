"""Execute the tutorial notebook and photograph what a user sees: the notebook study's
progress line and its per-label summary, for docs/notebooks.md.

    .venv/bin/python notebooks/screenshot.py DATA_DIR docs/notebook-run.png

DATA_DIR is a folder of MNIST's IDX files (e.g. data/MNIST/raw after `make data`): the
notebook then runs its quick mode (1 epoch per trial) on the real images. Needs Debian's
chromium and chromium-driver, selenium, nbclient and nbconvert (the docs extra).
"""

from __future__ import annotations

import base64
import os
import sys
import tempfile
from pathlib import Path

import nbclient
import nbformat
from nbconvert import HTMLExporter
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

NOTEBOOK = Path(__file__).resolve().parent / "tutorial.ipynb"
FROM, TO = "2. The notebook", "4. The report"  # the headings around what is shown


def execute(data: str, where: Path) -> nbformat.NotebookNode:
    os.environ["MNIST_SEARCH_TUTORIAL_DATA"] = data
    os.environ["MNIST_SEARCH_TUTORIAL_STORAGE"] = f"sqlite:///{where / 'tutorial.db'}"
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(where)}}).execute()
    return nb


def photograph(page: Path, out: Path, profile: Path) -> None:
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1000,2000",
                f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        driver.get(page.as_uri())
        top, bottom = driver.execute_script("""
            const hs = [...document.querySelectorAll('h2')];
            const y = t => hs.find(h => h.textContent.startsWith(t))
                             .getBoundingClientRect().top + window.scrollY;
            return [y(arguments[0]), y(arguments[1])];""", FROM, TO)
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": top - 8, "width": 1000, "height": bottom - top, "scale": 1}})
        out.write_bytes(base64.b64decode(shot["data"]))
    finally:
        driver.quit()


def main(data: str, out: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        nb = execute(str(Path(data).resolve()), where)
        html, _ = HTMLExporter().from_notebook_node(nb)
        page = where / "executed.html"
        page.write_text(html)
        photograph(page, Path(out), where / "profile")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
