"""The documentation cannot drift from the code: the study-file page lists every key and
every training-config field with the validator's own rule, and the site builds strictly."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from mnist_search.config import CONFIG_FIELDS, RULES, TrainConfig
from mnist_search.space import NOT_SEARCHABLE
from mnist_search.spec import TOP_KEYS

PAGE = (REPO / "docs" / "study-files.md").read_text()


def table_rows(section: str) -> list[list[str]]:
    """The rows of the first table under a `## section` heading, as cells."""
    body = PAGE.split(f"## {section}\n", 1)[1].splitlines()
    start = next(i for i, ln in enumerate(body) if ln.startswith("| "))
    end = next((i for i in range(start, len(body)) if not body[i].startswith("| ")), len(body))
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in body[start + 2:end]]


def test_every_top_level_key_is_documented():
    keys = [row[0].strip("`") for row in table_rows("Top-level keys")]
    assert keys == list(TOP_KEYS)


def test_every_training_field_is_documented_with_its_rule_and_default():
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    rows = table_rows("Training-config fields")
    assert [r[0].strip("`") for r in rows] == list(CONFIG_FIELDS)
    for field, default, allowed, searchable in rows:
        name = field.strip("`")
        assert allowed == RULES[name][1], name
        assert searchable == ("no" if name in NOT_SEARCHABLE else "yes"), name
        value = defaults[name]
        shown = ("none" if value is None else str(value).lower() if isinstance(value, bool)
                 else f'"{value}"' if isinstance(value, str)
                 else "[" + ", ".join(map(str, value)) + "]" if isinstance(value, tuple)
                 else repr(value))
        assert default == f"`{shown}`", name


def test_the_example_study_file_on_the_page_is_valid(tmp_path):
    from mnist_search.spec import load_spec

    example = re.search(r"```toml\n(.*?)```", PAGE, re.S).group(1)
    (tmp_path / "example.toml").write_text(example)
    spec = load_spec(tmp_path / "example.toml")
    assert spec.objective == "val_accuracy" and [r.label for r in spec.references] == \
        ["baseline"]


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path):
    mkdocs = Path(sys.executable).with_name("mkdocs")
    if not mkdocs.exists():  # CI installs the docs extra: there a missing mkdocs is a fault
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            "mkdocs is not installed: pip install -e '.[docs]'")
    res = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir",
                          str(tmp_path / "site")], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert res.returncode == 0, res.stdout + res.stderr
    cli = (tmp_path / "site" / "cli" / "index.html").read_text()
    for command in ("run", "confirm", "init", "rerun", "report"):
        assert f"mnist-search {command}" in cli  # generated from the click group
    api = (tmp_path / "site" / "python-api" / "index.html").read_text()
    assert "Objective" in api and "winners_curse_pp" in api  # from the docstrings
    notebook = (tmp_path / "site" / "tutorial-notebook" / "index.html").read_text()
    assert "ms.run_study" in notebook and "ms.confirm" in notebook  # rendered from the .ipynb
    assert not (REPO / ".cache").exists()  # the notebook plugin wrote no cache here
    shutil.rmtree(tmp_path / "site")


def test_the_design_page_maps_every_module_to_its_tests():
    """Every module of the package has a row in the design page's module map, and no row
    names a module that is gone (tests/module_map.py regenerates it)."""
    from module_map import BEGIN, END, modules

    page = (REPO / "docs" / "design.md").read_text()
    table = page.split(BEGIN)[1].split(END)[0]
    listed = re.findall(r"^\| `([a-z_.]+)` \|", table, re.M)
    expected = [m.removeprefix("mnist_search.") for m in modules()]
    assert sorted(listed) == sorted(expected)
    assert all(row.split("|")[2].strip() for row in table.strip().splitlines()[2:])
