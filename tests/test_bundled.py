"""Studies that ship with the package: run by name from anywhere, listed, copied out; and
the wheel, installed outside the repository, holds and runs them."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO

from mnist_search.bundled import BUNDLED_DIR, bundled_studies, resolve_study
from mnist_search.cli import cli
from mnist_search.errors import SpecError
from mnist_search.spec import load_spec

NAMES = sorted(p.stem for p in (REPO / "studies").glob("*.toml"))


def run(*args: str):
    return CliRunner().invoke(cli, list(args), obj={})


def test_every_study_file_is_bundled_and_loads_by_name(tmp_path, monkeypatch):
    """The repository's studies/ is the package's folder itself (so they cannot drift),
    the studies the tutorial documents are exactly the bundled ones, and each loads by
    name from a folder far from the repository."""
    assert (REPO / "studies").resolve() == BUNDLED_DIR.resolve()
    table = (REPO / "docs" / "tutorial.md").read_text()
    documented = sorted(re.findall(r"^\| `([\w-]+)\.toml` \|", table, re.M))
    assert len(documented) >= 9 and sorted(bundled_studies()) == documented
    monkeypatch.chdir(tmp_path)
    for name in documented:
        assert resolve_study(name) == BUNDLED_DIR / f"{name}.toml"
        spec = load_spec(name)
        assert spec.name == name and spec.description  # parsed, validated, named


def test_a_local_file_of_the_same_name_wins_with_a_notice(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    Path("notebook.toml").write_text('description = "mine"\n[fixed]\nepochs = 1\n')
    with caplog.at_level(logging.INFO, logger="mnist_search"):
        spec = load_spec("notebook")
    assert spec.description == "mine"
    assert "using the local file notebook.toml (not the bundled study" in caplog.text


def test_an_unknown_name_lists_the_bundled_studies(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as err:
        load_spec("notbook")
    assert str(err.value).startswith("notbook: no such study file, nor a bundled study")
    assert ", ".join(NAMES) in str(err.value)
    res = run("check", "notbook")
    assert res.exit_code == 2 and "notbook: no such study file" in res.stdout


def test_init_lists_and_copies_and_never_overwrites(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run("init")
    assert res.exit_code == 0
    lines = res.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == NAMES
    assert any(ln.startswith("notebook") and "15 training runs" in ln for ln in lines)
    res = run("init", "search", "-o", "mine.toml")
    assert res.exit_code == 0, res.output
    assert Path("mine.toml").read_bytes() == (BUNDLED_DIR / "search.toml").read_bytes()
    Path("mine.toml").write_text("# edited\n")
    res = run("init", "search", "-o", "mine.toml")
    assert res.exit_code == 2 and "mine.toml: exists already" in res.stderr
    assert Path("mine.toml").read_text() == "# edited\n"
    res = run("init", "nope")
    assert res.exit_code == 2 and "no bundled study of that name" in res.stderr
    assert sorted(os.listdir()) == ["mine.toml"]  # nothing half-written


@pytest.mark.slow
def test_the_wheel_installed_outside_the_repository_runs_its_bundled_studies(
        tmp_path, synthetic_dir):
    """Build the wheel, install it alone into a fresh venv whose dependencies come from
    this one, and use it from a folder outside the clone: check every bundled study by
    name, then init one, point it at the tests' synthetic data and run it."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
                    str(REPO)], check=True, capture_output=True)
    wheel = next(dist.glob("mnist_search-*.whl"))
    inside = zipfile.ZipFile(wheel).namelist()
    assert sorted(n.split("/")[-1][:-5] for n in inside
                  if n.startswith("mnist_search/studies/")) == NAMES
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    # dependencies from this venv's site-packages, but not its editable mnist_search
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(site), str(wheel)], check=True, capture_output=True)
    home = tmp_path / "elsewhere"
    home.mkdir()
    py = str(venv / "bin" / "python")

    def cli_(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([py, "-m", "mnist_search", *args], cwd=home, text=True,
                              capture_output=True, timeout=300)

    where = subprocess.run([py, "-c", "import mnist_search; print(mnist_search.__file__)"],
                           cwd=home, text=True, capture_output=True, check=True).stdout
    assert where.startswith(str(site)), where
    res = cli_("check", *NAMES)
    assert res.returncode == 0, res.stdout + res.stderr
    assert [ln.split(":")[0] for ln in res.stdout.splitlines()] == NAMES
    assert cli_("init", "notebook", "-o", "nb.toml").returncode == 0
    text = (home / "nb.toml").read_text()
    (home / "nb.toml").write_text(text.replace('dataset = "mnist"', f'dataset = "{synthetic_dir}"')
                                  .replace("epochs = 5", "epochs = 1"))
    res = cli_("-q", "run", "nb.toml", "--storage", f"sqlite:///{home / 'nb.db'}")
    assert res.returncode == 0, res.stderr
    assert "15/15 trials finished" in res.stdout
