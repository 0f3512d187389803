"""Studies written in a cell: load_spec takes a path, a bundled name, TOML text or a dict,
through the one validator; run_study's workers run the very spec the caller holds; and the
workers import the package from where the caller found it (sys.path.append, as on Colab)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib

import optuna
import pytest

import mnist_search as ms
from mnist_search.errors import SpecError

TEXT = """
name = "cell"
description = "written in a cell"
trials = 3
[sampler]
kind = "random"
[fixed]
dataset = DATA
epochs = 1
hidden = [16]
[search]
lr = { low = 0.01, high = 0.1, log = true }
[[reference]]
label = "base"
lr = 0.05
"""


def text(data_dir) -> str:
    return TEXT.replace("DATA", json.dumps(str(data_dir)))


def test_text_and_dict_load_like_the_file(tmp_path, synthetic_dir):
    path = tmp_path / "cell.toml"
    path.write_text(text(synthetic_dir))
    from_file = ms.load_spec(path)
    from_text = ms.load_spec(text(synthetic_dir))
    from_dict = ms.load_spec(tomllib.loads(text(synthetic_dir)))
    for spec in (from_text, from_dict):
        assert spec.name == "cell" and spec.path == "<study>"
        assert spec.fixed == from_file.fixed and spec.references == from_file.references
        assert spec.text_hash == from_text.text_hash
    assert ms.load_spec({"description": "x"}).name == "study"


@pytest.mark.parametrize("bad, fragment", [
    ("trials = 0\nx = 1\n", "<study>: unknown key x"),
    ("[fixed\nepochs = 1\n", "<study>: malformed TOML"),
    ({"fixed": {"epochs": 0}}, "<study>: fixed.epochs = 0 is not allowed"),
])
def test_bad_text_or_dict_is_one_line(bad, fragment):
    with pytest.raises(SpecError) as err:
        ms.load_spec(bad)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_workers_run_the_spec_the_caller_holds(tmp_path, synthetic_dir):
    """A spec changed in memory: the file's reference dropped, epochs and trials changed.
    The workers used to load the file again and run its reference."""
    spec = ms.load_spec(text(synthetic_dir))
    changed = dataclasses.replace(spec.with_fixed(epochs=2), references=(), trials=2)
    url = f"sqlite:///{tmp_path / 'm.db'}"
    summary = ms.run_study(changed, storage=url, progress=False)
    assert summary.complete
    trials = optuna.load_study(study_name="cell", storage=url).trials
    assert len(trials) == 2 and not [t for t in trials if "label" in t.user_attrs]
    assert all(t.user_attrs["config"]["epochs"] == 2 for t in trials)


def test_workers_find_a_package_put_on_sys_path_by_hand(tmp_path, synthetic_dir):
    src = tmp_path / "src"
    shutil.copytree(ms.__path__[0], src / "mnist_search",
                    ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    # the dependencies, but not the editable mnist_search (its finder is a .pth there)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    url = f"sqlite:///{tmp_path / 'c.db'}"
    script = textwrap.dedent(f"""
        import sys
        sys.path.append({str(src)!r})
        import mnist_search as ms
        assert ms.__file__.startswith({str(src)!r}), ms.__file__
        summary = ms.run_study({text(synthetic_dir)!r}, storage={url!r}, workers=1,
                               progress=False)
        print("complete" if summary.complete else summary)
    """)
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", script], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "complete", proc.stdout + proc.stderr


def test_run_tf32_is_recorded_with_every_trial(tmp_path, synthetic_dir):
    from click.testing import CliRunner

    from mnist_search.cli import cli

    path = tmp_path / "cell.toml"
    path.write_text(text(synthetic_dir))
    url = f"sqlite:///{tmp_path / 't.db'}"
    res = CliRunner().invoke(cli, ["-q", "run", str(path), "--storage", url, "--tf32"],
                             obj={})
    assert res.exit_code == 0, res.output
    trials = optuna.load_study(study_name="cell", storage=url).trials
    assert trials and all(t.user_attrs["config"]["matmul_precision"] == "tf32"
                          for t in trials)
