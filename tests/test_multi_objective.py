"""Accuracy against size: a study with two objectives, end to end on synthetic data."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

import mnist_search as ms
from mnist_search.cli import cli
from mnist_search.errors import SpecError

from helpers import trials, write_study

STUDY = """
trials = 10
objective = ["val_accuracy", "parameters"]
direction = ["maximize", "minimize"]
[sampler]
kind = "tpe"
n_startup_trials = 4
[pruner]
kind = "median"
[fixed]
dataset = DATA
epochs = 2
val_size = 100
lr = 0.05
momentum = 0.9
[search]
depth = { low = 1, high = 2 }
width = { low = 4, high = 128, log = true }
"""


def run(*args: str):
    return CliRunner().invoke(cli, list(args), obj={})


@pytest.fixture(scope="module")
def mo_db(tmp_path_factory, synthetic_dir):
    tmp = tmp_path_factory.mktemp("mo")
    spec = write_study(tmp / "size.toml", synthetic_dir, STUDY)
    url = f"sqlite:///{tmp / 's.db'}"
    res = run("run", str(spec), "--storage", url, "--workers", "1")
    assert res.exit_code == 0, res.output
    assert "pruning is off" in res.stderr  # told once, not silently ignored
    return tmp, url


def test_trials_carry_both_objectives_and_the_front_is_stored(mo_db):
    _, url = mo_db
    study = optuna.load_study(study_name="size", storage=url)
    assert len(study.directions) == 2
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 10
    for t in done:
        assert t.values == [t.user_attrs["val_accuracy"], t.user_attrs["parameters"]]
        assert not t.intermediate_values  # Optuna cannot report multi-objective trials
    def dominated(a) -> bool:  # by a trial at least as good in both, better in one
        return any(b.values[0] >= a.values[0] and b.values[1] <= a.values[1]
                   and b.values != a.values for b in done)

    expected = {t.number for t in done if not dominated(t)}
    assert {t.number for t in study.best_trials} == expected  # the front, computed here
    assert 1 < len(expected) < 10


def test_show_and_best_list_the_pareto_front(mo_db):
    _, url = mo_db
    study = optuna.load_study(study_name="size", storage=url)
    front = {t.number for t in study.best_trials}
    res = run("show", "size", "--storage", url, "--format", "json")
    rows = json.loads(res.stdout)
    assert {r["number"] for r in rows} == front
    assert all({"value_val_accuracy", "value_parameters"} <= set(r) for r in rows)
    best = json.loads(run("best", "size", "--storage", url).stdout)
    assert isinstance(best, list) and {r["number"] for r in best} == front
    frame = ms.load_results("size", url)
    assert len(frame) == 10 and "value_parameters" in frame.columns


def test_report_draws_the_front_with_a_caption_from_it(mo_db):
    tmp, url = mo_db
    out = tmp / "rep"
    res = run("report", "size", "--storage", url, "-o", str(out), "--format", "md")
    assert res.exit_code == 0, res.output
    text = (out / "report.md").read_text()
    assert (out / "pareto_front.png").exists() and "skipped" not in text
    study = optuna.load_study(study_name="size", storage=url)
    front = sorted(study.best_trials, key=lambda t: t.values[1])
    assert f"The front holds {len(front)} of 10 finished trials." in text
    assert len(front) > 1  # the study's seed gives a front to draw a slope from
    lo, hi = front[0], front[-1]
    per_doubling = (hi.values[0] - lo.values[0]) / math.log2(hi.values[1] / lo.values[1])
    assert f"each doubling of the parameters bought {per_doubling:.2f} points" in text


def test_objective_returns_both_values_in_the_users_study(tmp_path, synthetic_dir):
    spec = write_study(tmp_path / "size.toml", synthetic_dir, STUDY)
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.optimize(ms.Objective(spec, device="cpu", epochs=1), n_trials=2)
    assert all(len(t.values) == 2 for t in study.trials)


@pytest.mark.parametrize("body,fragment", [
    ('objective = ["val_accuracy", "parameters"]\ndirection = "maximize"\n', "one per objective"),
    ('objective = ["test_accuracy", "test_accuracy"]\ndirection = ["maximize", "maximize"]\n',
     "without repeats"),
    ('objective = ["loss"]\n', "'parameters'"),
    ('objective = ["test_accuracy", "parameters"]\ndirection = ["maximize", "minimize"]\n'
     '[sampler]\nkind = "cmaes"\n', "CMA-ES optimizes one"),
])
def test_bad_objective_lists_are_one_line(tmp_path, body, fragment):
    path = tmp_path / "bad.toml"
    path.write_text('description = "x"\n' + body)
    with pytest.raises(SpecError) as err:
        ms.load_spec(path)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_single_objective_results_keep_their_shape(tmp_path, synthetic_dir):
    spec = write_study(tmp_path / "one.toml", synthetic_dir,
                       STUDY.replace('["val_accuracy", "parameters"]', '"val_accuracy"')
                       .replace('["maximize", "minimize"]', '"maximize"'))
    url = f"sqlite:///{tmp_path / 'o.db'}"
    assert run("-q", "run", str(spec), "--storage", url, "--trials", "3").exit_code == 0
    frame = ms.load_results("one", url)
    assert "value_parameters" not in frame.columns and frame["value"].notna().all()
    assert all(t.intermediate_values for t in trials(url, "one"))
