"""End to end on a tiny synthetic dataset: the CLI, real worker processes, real SQLite."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from mnist_search import load_results
from mnist_search.cli import cli
from mnist_search.config import TrainConfig
from mnist_search.data import load_data
from mnist_search.spec import load_spec
from mnist_search.training.train import train


def study_file(tmp_path: Path, data_dir: Path, body: str, name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'description = "synthetic {name}"\nseed = 3\n' + body.replace(
        "DATA", json.dumps(str(data_dir))))
    return path


TPE_WITH_REFS = """
trials = 8
[sampler]
kind = "tpe"
n_startup_trials = 3
[fixed]
dataset = DATA
epochs = 2
lr = 0.05
[search]
momentum = { low = 0.0, high = 0.95 }
dropout = [0.0, 0.3]
[[reference]]
label = "baseline"
notebook_accuracy = 50.0
[[reference]]
label = "momentum-0.0"
momentum = 0.0
"""


def run(*args):
    return CliRunner().invoke(cli, list(args), obj={})


def trials_of(db: Path, name: str = "tiny"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}").get_trials()


def test_two_workers_finish_exactly_the_total_and_resume_adds_nothing(tmp_path, synthetic_dir):
    spec = study_file(tmp_path, synthetic_dir, TPE_WITH_REFS)
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    res = run("-q", "run", str(spec), "--storage", url, "--workers", "2")
    assert res.exit_code == 0, res.output
    trials = trials_of(db)
    assert len(trials) == 8 and all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(8))
    labels = [t.user_attrs.get("label") for t in trials if "label" in t.user_attrs]
    assert sorted(labels) == ["baseline", "momentum-0.0"]  # equal params, both ran, once each

    res = run("-q", "run", str(spec), "--storage", url, "--workers", "2")
    assert res.exit_code == 0 and len(trials_of(db)) == 8  # resume: nothing new

    res = run("-q", "run", str(spec), "--storage", url, "--trials", "10")
    assert res.exit_code == 0
    after = trials_of(db)
    assert len(after) == 10
    assert sorted(t.user_attrs["label"] for t in after if "label" in t.user_attrs) == \
        ["baseline", "momentum-0.0"]

    # every trial carries what is needed to re-run it, and re-running gives the same numbers
    t = after[3]
    for key in ("seed", "architecture", "parameters", "train_loss", "test_accuracy",
                "penalised_layer_zero_fraction", "stack_seconds", "member_seconds",
                "population_size", "device", "torch_version",
                "optuna_version", "data_digest", "config"):
        assert key in t.user_attrs, key
    assert len(t.intermediate_values) == 2
    config = TrainConfig(**t.user_attrs["config"])
    again = train(config, load_data(str(synthetic_dir)))
    assert round(again.test_accuracy, 4) == t.user_attrs["test_accuracy"]
    # the whole loss curve, not just an accuracy on 128 images (0.78-point steps)
    assert [round(x, 6) for x in again.train_loss] == t.user_attrs["train_loss"]


SHAPES = """
[sampler]
kind = "grid"
[fixed]
dataset = DATA
epochs = 1
[[reference]]
label = "small-a"
hidden = [16]
[[reference]]
label = "big-a"
hidden = [32]
[[reference]]
label = "small-b"
hidden = [16]
momentum = 0.9
[[reference]]
label = "big-b"
hidden = [32]
dropout = 0.3
[[reference]]
label = "big-c"
hidden = [32]
l2 = 0.001
"""


def test_same_shape_references_are_queued_together_and_train_as_one_stack(tmp_path,
                                                                          synthetic_dir):
    spec = study_file(tmp_path, synthetic_dir, SHAPES)
    db = tmp_path / "s.db"
    # one worker: several CPU workers would split a group at their share (test_queue)
    res = run("-q", "run", str(spec), "--storage", f"sqlite:///{db}", "--workers", "1")
    assert res.exit_code == 0, res.output
    trials = sorted(trials_of(db), key=lambda t: t.number)
    # the costlier shape group first, the file's order within each group
    assert [t.user_attrs["label"] for t in trials] == \
        ["big-a", "big-b", "big-c", "small-a", "small-b"]
    for labels in (("big-a", "big-b", "big-c"), ("small-a", "small-b")):
        group = [t for t in trials if t.user_attrs["label"] in labels]
        assert {t.user_attrs["population_size"] for t in group} == {len(labels)}
        assert len({t.user_attrs["worker"] for t in group}) == 1  # claimed whole
        assert len({t.user_attrs["config"]["order_seed"] for t in group}) == 1


def test_cancelled_pool_stops_its_waiting_workers(tmp_path, synthetic_dir):
    """Workers start before the study is opened; if opening fails, or there is nothing to
    do, cancel must end them at once (they would otherwise wait for orders)."""
    import threading

    from mnist_search.workers.spawn import Pool

    spec = study_file(tmp_path, synthetic_dir, SHAPES)
    pool = Pool(2, load_spec(spec), "cpu")
    done = threading.Event()
    threading.Thread(target=lambda: (pool.cancel(), done.set()), daemon=True).start()
    assert done.wait(30), "cancel did not return"
    for p in pool.procs:  # gone from the system, not just marked as ended by the pool
        with pytest.raises(ProcessLookupError):
            os.kill(p.pid, 0)


def test_show_export_best_and_optuna_cli_read_the_study(tmp_path, synthetic_dir):
    spec = study_file(tmp_path, synthetic_dir, TPE_WITH_REFS.replace("trials = 8", "trials = 4"))
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert run("-q", "run", str(spec), "--storage", url).exit_code == 0

    res = run("show", "tiny", "--storage", url, "--format", "json")
    rows = json.loads(res.stdout)
    assert len(rows) == 4 and rows[0]["label"] == "baseline"
    assert rows[0]["notebook_accuracy"] == 50.0 and "momentum=" in rows[0]["params"]
    assert "optimistic" in res.stderr  # a searched study scored on test is flagged

    res = run("show", "tiny", "--storage", url, "--top", "2")
    lines = res.stdout.strip().splitlines()  # the header, 2 trials, then the verdict
    assert res.exit_code == 0 and len(lines) == 4
    assert lines[-1].startswith("n = 1 per config: no interval, so no best is named")

    out = tmp_path / "t.csv"
    res = run("export", "tiny", "--storage", url, "--format", "csv", "-o", str(out))
    assert res.exit_code == 0, res.output
    with out.open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 4
    assert {"value_epoch_1", "value_epoch_2", "train_loss_epoch_2", "params_momentum",
            "seed", "label"} <= set(table[0])

    frame = load_results("tiny", url)
    assert list(frame.columns) == list(table[0].keys())

    res = run("best", "tiny", "--storage", url)
    assert json.loads(res.stdout)["state"] == "COMPLETE"

    optuna_cli = Path(sys.executable).with_name("optuna")
    listed = subprocess.run([str(optuna_cli), "studies", "--storage", url, "-f", "json"],
                            capture_output=True, text=True, check=True)
    assert "tiny" in listed.stdout


def test_a_study_of_a_users_own_objective_is_shown_as_strict_json(tmp_path):
    """A user's own Optuna code may store one number where this package stores an
    epoch curve (train_loss), and a nan there: show, best and export read it, and what
    they print parses as JSON without NaN."""
    url = f"sqlite:///{tmp_path / 'own.db'}"
    study = optuna.create_study(study_name="own", storage=url, direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        # the best trial is the one whose loss is nan, so `best` has it to print
        trial.set_user_attr("train_loss", float("nan") if trial.number == 0 else 1.0 - x)
        return x + (1.0 if trial.number == 0 else 0.0)

    study.optimize(objective, n_trials=3)

    def refuse(name: str):
        raise ValueError(f"{name} is not JSON")

    res = run("show", "own", "--storage", url, "--format", "json")
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout, parse_constant=refuse)) == 3
    res = run("best", "own", "--storage", url)
    assert res.exit_code == 0, res.output
    best = json.loads(res.stdout, parse_constant=refuse)
    assert best["number"] == 0 and best.get("train_loss") is None
    # no config recorded, so no per-config answer: said so, not "no completed trial yet"
    assert res.stderr.startswith("3 complete trials, none recorded by an mnist-search run")
    out = tmp_path / "own.json"
    res = run("export", "own", "--storage", url, "--format", "json", "-o", str(out))
    assert res.exit_code == 0, res.output
    exported = json.loads(out.read_text(), parse_constant=refuse)
    assert [r["train_loss"] for r in exported][0] is None
    assert load_results("own", url)["train_loss"].iloc[1:].notna().all()


def test_diverging_trial_is_failed_with_reason_and_study_goes_on(tmp_path, synthetic_dir):
    spec = study_file(tmp_path, synthetic_dir, """
[sampler]
kind = "grid"
[fixed]
dataset = DATA
epochs = 2
momentum = 0.9
[search]
lr = [0.05, 1e12]
""")
    url = f"sqlite:///{tmp_path / 's.db'}"
    res = run("-q", "run", str(spec), "--storage", url)
    assert res.exit_code == 0, res.output
    trials = trials_of(tmp_path / "s.db")
    states = {t.params["lr"]: t for t in trials}
    assert len(trials) == 2
    assert states[0.05].state == TrialState.COMPLETE
    assert states[1e12].state == TrialState.FAIL
    assert states[1e12].user_attrs["fail_reason"] == "nonfinite"


PRUNE_STUDY = """
trials = TRIALS
[sampler]
kind = "random"
[pruner]
kind = "median"
n_startup_trials = 0
n_warmup_steps = 0
[fixed]
dataset = DATA
epochs = 3
momentum = 0.9
[search]
lr = LR
"""
POOR_REFERENCES = """
[[reference]]
label = "bad-a"
lr = 1e-5
[[reference]]
label = "bad-b"
lr = 1e-5
"""


def test_reference_trials_are_never_pruned(tmp_path, synthetic_dir):
    """Good unlabelled trials finish first and set the median; then two poor references and
    poor unlabelled trials run: the references complete every epoch, the others are pruned."""
    good = PRUNE_STUDY.replace("TRIALS", "4").replace("LR", "{ low = 0.05, high = 0.1 }")
    spec = study_file(tmp_path, synthetic_dir, good)
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert run("-q", "run", str(spec), "--storage", url).exit_code == 0
    poor = PRUNE_STUDY.replace("TRIALS", "10").replace(
        "LR", "{ low = 1e-5, high = 2e-5 }") + POOR_REFERENCES
    spec = study_file(tmp_path, synthetic_dir, poor)  # the same study, now with references
    res = run("-q", "run", str(spec), "--storage", url, "--force", "--population", "1")
    assert res.exit_code == 0, res.output
    after = trials_of(tmp_path / "s.db")[4:]
    refs = [t for t in after if "label" in t.user_attrs]
    assert sorted(t.user_attrs["label"] for t in refs) == ["bad-a", "bad-b"]
    for t in refs:
        assert t.state == TrialState.COMPLETE and len(t.intermediate_values) == 3
        assert t.value < 50  # poor: a prunable trial like it would have been pruned
    pruned = [t for t in after if t.state == TrialState.PRUNED]
    assert pruned and all("label" not in t.user_attrs for t in pruned)


def test_changed_study_file_refuses_to_resume_without_force(tmp_path, synthetic_dir):
    spec = study_file(tmp_path, synthetic_dir, TPE_WITH_REFS.replace("trials = 8", "trials = 2"))
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert run("-q", "run", str(spec), "--storage", url).exit_code == 0
    spec.write_text(spec.read_text().replace("high = 0.95", "high = 0.9"))
    res = run("-q", "run", str(spec), "--storage", url)
    assert res.exit_code == 2 and "changed since" in res.stderr
    res = run("-q", "run", str(spec), "--storage", url, "--force")
    assert res.exit_code == 0


@pytest.mark.parametrize("args,fragment", [
    (["show", "nope"], "no study named 'nope'"),
    (["export", "nope", "-o", "x.csv"], "no study named 'nope'"),
    (["best", "nope"], "no study named 'nope'"),
])
def test_unknown_study_name_is_a_usage_error(tmp_path, synthetic_dir, args, fragment):
    spec = study_file(tmp_path, synthetic_dir, TPE_WITH_REFS.replace("trials = 8", "trials = 2"))
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert run("-q", "run", str(spec), "--storage", url).exit_code == 0
    res = run(*args, "--storage", url)
    assert res.exit_code == 2 and fragment in res.stderr and "tiny" in res.stderr


CONSTRAINED = """
trials = 8
[sampler]
kind = "random"
[constraints]
max_parameters = 30000
[fixed]
dataset = DATA
epochs = 1
[search]
width = { low = 8, high = 128, log = true }
depth = [1]
"""


def test_constraints_mark_trials_over_a_cap_and_best_is_feasible(tmp_path, synthetic_dir):
    spec = study_file(tmp_path, synthetic_dir, CONSTRAINED)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    res = run("-q", "run", str(spec), "--storage", url)
    assert res.exit_code == 0, res.output
    trials = [t for t in trials_of(tmp_path / "c.db") if t.state.name == "COMPLETE"]
    for t in trials:
        width = t.params["width_1"]
        params = 784 * width + width + width * 10 + 10  # the MLP 784 -> width -> 10
        assert t.constraints == {"parameters": params - 30000}
    feasible = [t for t in trials if t.constraints["parameters"] <= 0]
    assert feasible and len(feasible) < len(trials)  # both kinds were drawn
    best = json.loads(run("best", spec.stem, "--storage", url).stdout)
    assert best["number"] == max(feasible, key=lambda t: t.value).number
    shown = json.loads(run("show", spec.stem, "--storage", url, "--format", "json").stdout)
    assert {r["number"]: r["feasible"] for r in shown} == \
        {t.number: t.constraints["parameters"] <= 0 for t in trials}
    out = tmp_path / "rep"
    assert run("report", spec.stem, "--storage", url, "-o", str(out), "--format",
               "md").exit_code == 0
    n_bad = len(trials) - len(feasible)
    assert f"{n_bad} of {len(trials)} complete trials are over the study's [constraints]" in \
        (out / "report.md").read_text()


WARM_A = """
trials = 6
[sampler]
kind = "random"
[fixed]
dataset = DATA
epochs = 1
[search]
momentum = { low = 0.0, high = 0.9 }
"""


def test_a_warm_start_enqueues_the_best_fitting_configs_of_another_study_once(
        tmp_path, synthetic_dir):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    a = study_file(tmp_path, synthetic_dir, WARM_A, name="a")
    assert run("-q", "run", str(a), "--storage", url).exit_code == 0
    source = optuna.load_study(study_name="a", storage=url)
    best4 = sorted(source.trials, key=lambda t: (-t.value, t.number))[:4]
    fits = [t for t in best4 if t.params["momentum"] <= 0.5]
    assert 0 < len(fits) < 4  # some of the 4 best fit the narrower space, some do not
    b = study_file(tmp_path, synthetic_dir, WARM_A.replace("high = 0.9", "high = 0.5")
                   .replace("trials = 6", "trials = 5"), name="b")
    res = run("run", str(b), "--storage", url, "--warm-start", "a:4")
    assert res.exit_code == 0, res.output
    skipped = [t for t in best4 if t not in fits]
    for t in skipped:
        assert f"warm start: a#{t.number} skipped: momentum = {t.params['momentum']!r} is " \
            "outside the searched range [0.0, 0.5]" in res.stderr
    warm = [t for t in optuna.load_study(study_name="b", storage=url).trials
            if "warm_start" in t.user_attrs]
    assert [t.user_attrs["warm_start"] for t in warm] == [f"a#{t.number}" for t in fits]
    assert [t.params["momentum"] for t in warm] == [t.params["momentum"] for t in fits]
    assert all(t.state.name == "COMPLETE" for t in warm)
    # again: nothing enqueued twice
    assert run("-q", "run", str(b), "--storage", url, "--warm-start", "a:4",
               "--trials", "6").exit_code == 0
    again = [t for t in optuna.load_study(study_name="b", storage=url).trials
             if "warm_start" in t.user_attrs]
    assert len(again) == len(warm)


@pytest.mark.parametrize("value,message", [
    ("nosuch", "--warm-start: no study named 'nosuch'"),
    ("c:0", "expected STUDY or STUDY:K with K an integer >= 1"),
    ("c", "a study cannot warm-start itself"),
])
def test_a_bad_warm_start_is_one_line_and_creates_nothing(tmp_path, synthetic_dir, value,
                                                          message):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    c = study_file(tmp_path, synthetic_dir, WARM_A, name="c")
    res = run("run", str(c), "--storage", url, "--warm-start", value)
    assert res.exit_code == 2 and message in res.stderr, res.output
    assert len(res.stderr.strip().splitlines()) == 1
    if (tmp_path / "w.db").exists():
        assert "c" not in optuna.study.get_all_study_names(storage=url)
