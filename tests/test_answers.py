"""Every answer with its noise: seeds for every grid point, one row per config with its n
and interval, and a best config named only with its interval and Welch's t-test against
the runner-up and the baseline, in show, best, ms.summary and the report alike."""

from __future__ import annotations

import json
import warnings

import optuna
import pytest
from click.testing import CliRunner
from scipy import stats

import mnist_search as ms
from mnist_search.cli import cli

from helpers import write_study

GRID = """
replicates = 3
[sampler]
kind = "grid"
[fixed]
dataset = DATA
epochs = 2
hidden = [16]
lr = 0.05
momentum = 0.5
penalty_layer = 2
[search]
l2 = [0.0, 0.001, 5.0]
"""


def run(*args: str):
    return CliRunner().invoke(cli, list(args), obj={})


@pytest.fixture(scope="module")
def grid_db(tmp_path_factory, synthetic_dir):
    tmp = tmp_path_factory.mktemp("answers")
    spec = write_study(tmp / "g.toml", synthetic_dir, GRID)
    url = f"sqlite:///{tmp / 'g.db'}"
    res = run("-q", "run", str(spec), "--storage", url, "--workers", "2")
    assert res.exit_code == 0, res.output
    return url


def _by_point(url: str) -> dict[float, list[optuna.trial.FrozenTrial]]:
    out: dict[float, list[optuna.trial.FrozenTrial]] = {}
    for t in optuna.load_study(study_name="g", storage=url).trials:
        out.setdefault(t.params["l2"], []).append(t)
    return out


def test_replicates_give_every_grid_point_its_own_seeds(grid_db):
    points = _by_point(grid_db)
    assert sorted(points) == [0.0, 0.001, 5.0]
    for trials in points.values():
        assert len(trials) == 3 and all(t.state.name == "COMPLETE" for t in trials)
        assert len({t.user_attrs["seed"] for t in trials}) == 3
        assert len({t.user_attrs["config"]["order_seed"] for t in trials}) == 3
        assert sorted(t.user_attrs.get("replicate", 1) for t in trials) == [1, 2, 3]


def test_show_by_config_gives_one_row_per_point_with_its_interval(grid_db):
    res = run("show", "g", "--storage", grid_db, "--by-config", "--format", "json")
    assert res.exit_code == 0, res.output
    found = json.loads(res.stdout)
    rows = {r["l2"]: r for r in found["configs"]}
    assert sorted(rows) == [0.0, 0.001, 5.0]
    for l2, trials in _by_point(grid_db).items():
        values = [t.value for t in trials]
        s = stats.describe(values)
        half = stats.t.ppf(0.975, 2) * (s.variance / 3) ** 0.5
        assert rows[l2]["n"] == 3
        assert rows[l2]["mean"] == pytest.approx(s.mean, abs=0.006)
        assert rows[l2]["ci95"] == pytest.approx(half, abs=0.006)
    assert found["objective"] == "test_accuracy" and found["verdict"]


def test_the_verdict_names_a_best_only_with_its_interval_and_welch(grid_db):
    """The verdict's numbers, checked against scipy on the stored values."""
    points = {l2: [t.value for t in ts] for l2, ts in _by_point(grid_db).items()}
    means = {l2: sum(v) / 3 for l2, v in points.items()}
    best, runner = sorted(means, key=lambda k: -means[k])[:2]
    res = run("show", "g", "--storage", grid_db, "--by-config")
    assert res.exit_code == 0, res.output
    line = res.stdout.strip().splitlines()[-1]
    assert line.startswith(f"best test_accuracy: l2={best}: {means[best]:.2f} [")
    assert "(n = 3)" in line
    p = stats.ttest_ind(points[best], points[runner], equal_var=False).pvalue
    assert f"runner-up l2={runner}: {means[runner]:.2f}" in line
    assert f"p = {p:.2g}" in line
    assert ("does not beat the runner-up" in line) == (p >= 0.05)
    if 0.0 not in (best, runner):  # the baseline of an L2 grid is l2 = 0
        assert f"baseline l2=0.0: {means[0.0]:.2f}" in line


def test_best_and_summary_say_the_same(grid_db):
    res = run("best", "g", "--storage", grid_db)
    assert res.exit_code == 0, res.output
    json.loads(res.stdout)  # stdout is still the trial, whole
    table = ms.summary("g", grid_db)
    verdict = run("show", "g", "--storage", grid_db, "--by-config").stdout.splitlines()[-1]
    assert verdict in res.stderr and verdict in table.caption
    assert len(table.to_pandas()) == 3 and list(table.to_pandas()["n"]) == [3, 3, 3]


def test_a_grid_scored_on_test_is_flagged_and_show_names_its_objective(grid_db):
    res = run("show", "g", "--storage", grid_db)
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0].split()[:4] == ["number", "label", "params",
                                                     "test_accuracy"]
    assert "(objective)" in res.stdout.splitlines()[0]
    assert "selected on test accuracy" in res.stderr
    study = optuna.load_study(study_name="g", storage=grid_db)
    assert study.metric_names == ["test_accuracy"]  # the dashboard's axis


def test_single_runs_name_no_winner_and_say_what_to_run(tmp_path, synthetic_dir):
    spec = write_study(tmp_path / "one.toml", synthetic_dir,
                       GRID.replace("replicates = 3", "replicates = 1"), name="one")
    url = f"sqlite:///{tmp_path / 'one.db'}"
    assert run("-q", "run", str(spec), "--storage", url).exit_code == 0
    res = run("show", "one", "--storage", url, "--by-config")
    line = res.stdout.strip().splitlines()[-1]
    assert line.startswith("n = 1 per config: no interval, so no best is named")
    assert "--replicates 3" in line and "best test_accuracy" not in res.stdout
    frame = ms.summary("one", url).to_pandas()  # no labels: by config, never empty
    assert len(frame) == 3 and set(frame["n"]) == {1}


def test_the_report_draws_zero_and_names_no_lambda_its_interval_does_not_separate(
        grid_db, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Optuna or scipy warning reaches the user
        view = ms.report("g", storage=grid_db)
    text = {f.title: f.text for f in view.figures}
    title = "L2 on the penalised layer (fc2)"
    assert title in text, list(text)
    assert "L1" not in text[title] and "sparsity" not in text[title]
    points = {l2: [t.value for t in ts] for l2, ts in _by_point(grid_db).items()}
    top = max(points, key=lambda k: sum(points[k]))
    nxt = sorted(points, key=lambda k: -sum(points[k]))[1]
    p = stats.ttest_ind(points[top], points[nxt], equal_var=False).pvalue
    assert f"lambda {top:g} at" in text[title] and f"next lambda {nxt:g}" in text[title]
    assert ("neither is named best" in text[title]) == (p >= 0.05)
    # l2 = 5 wrecks training: a cost against no penalty, beyond seed noise
    if stats.ttest_ind(points[5.0], points[0.0], equal_var=False).pvalue < 0.05:
        assert "lambda 5 (" in text[title] and "cost accuracy against none" in text[title]


def _study_of(values: dict[float, list[float]], baseline_label: bool = False) -> optuna.Study:
    """A study whose trials hold what runs record, one config per l2 value."""
    from mnist_search.config import TrainConfig

    study = optuna.create_study(direction="maximize", study_name="made")
    study.set_user_attr("objective", "test_accuracy")
    for l2, vals in values.items():
        for i, v in enumerate(vals):
            config = TrainConfig(l2=l2, seed=i).__dict__
            attrs = {"config": config, "test_accuracy": v}
            study.add_trial(optuna.trial.create_trial(
                params={"l2": l2}, distributions={"l2": optuna.distributions.FloatDistribution(
                    0, 1)}, value=v, user_attrs=attrs))
    return study


def test_a_winner_beyond_noise_is_said_to_beat_both_runner_up_and_baseline():
    from mnist_search.search.summary import answer

    values = {0.0: [90.0, 90.2, 89.9], 1e-4: [91.0, 91.1, 90.8], 1e-3: [93.0, 93.2, 92.9]}
    line = answer(_study_of(values)).verdict
    p_runner = stats.ttest_ind(values[1e-3], values[1e-4], equal_var=False).pvalue
    p_base = stats.ttest_ind(values[1e-3], values[0.0], equal_var=False).pvalue
    assert line.startswith("best test_accuracy: l2=0.001: 93.03 [")
    assert "beats the runner-up l2=0.0001: 90.97 [" in line and f"p = {p_runner:.2g}" in line
    assert "beats the baseline l2=0.0: 90.03 [" in line and f"p = {p_base:.2g}" in line
    assert "does not beat" not in line


def test_a_pick_inside_the_noise_is_not_named_a_winner():
    from mnist_search.search.summary import answer

    values = {0.0: [90.0, 91.5, 89.0], 1e-4: [91.0, 89.5, 90.4]}
    line = answer(_study_of(values)).verdict
    assert "does not beat the runner-up" in line
    single = answer(_study_of({0.0: [90.0], 1e-4: [91.0]})).verdict
    assert single.startswith("n = 1 per config") and "best" not in single.split(":")[0]


SEARCHED = """
trials = 6
replicates = 3
[sampler]
kind = "random"
[fixed]
dataset = DATA
epochs = 1
hidden = [8]
[search]
lr = { low = 0.01, high = 0.1, log = true }
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_a_sampler_proposes_configs_and_each_trains_with_every_seed(tmp_path, synthetic_dir,
                                                                    workers):
    spec = write_study(tmp_path / "r.toml", synthetic_dir, SEARCHED, name="r")
    url = f"sqlite:///{tmp_path / 'r.db'}"
    res = run("-q", "run", str(spec), "--storage", url, "--workers", str(workers))
    assert res.exit_code == 0, res.output
    trials = optuna.load_study(study_name="r", storage=url).trials
    by_lr: dict[float, list[optuna.trial.FrozenTrial]] = {}
    for t in trials:
        by_lr.setdefault(t.params["lr"], []).append(t)
    assert len(trials) == 6 and sorted(map(len, by_lr.values())) == [3, 3]
    for group in by_lr.values():
        first = min(group, key=lambda t: t.number)
        copies = [t for t in group if t is not first]
        assert {t.user_attrs["replicate_of"] for t in copies} == {first.number}
        assert sorted(t.user_attrs["replicate"] for t in copies) == [2, 3]
        assert len({t.user_attrs["seed"] for t in group}) == 3
    frame = ms.summary("r", url).to_pandas()
    assert sorted(frame["n"]) == [3, 3]
