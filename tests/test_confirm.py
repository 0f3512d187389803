"""`confirm`: a search's best configs retrained with fresh seeds, stored apart from it."""

from __future__ import annotations

import json
import math
import statistics

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState
from scipy import stats

import mnist_search as ms
from mnist_search.cli import cli
from mnist_search.config import TrainConfig
from mnist_search.data import load_data
from mnist_search.search.confirm import Confirmed, verdict
from mnist_search.stats import summarize
from mnist_search.training.train import train_population

from helpers import write_study

STUDY = """
trials = 4
objective = "val_accuracy"
[sampler]
kind = "random"
[fixed]
dataset = DATA
epochs = 2
val_size = 96
[search]
momentum = { low = 0.0, high = 0.9 }
lr = { low = 0.005, high = 0.05, log = true }
"""


def confirms(replicate: optuna.trial.FrozenTrial) -> int:
    """The trial a replicate confirms, from its label 'trial-N' or 'trial-N#r'."""
    return int(replicate.user_attrs["label"].split("#")[0].removeprefix("trial-"))


def run(*args: str):
    return CliRunner().invoke(cli, list(args), obj={})


@pytest.fixture()
def searched(tmp_path, synthetic_dir):
    spec = write_study(tmp_path / "c.toml", synthetic_dir, STUDY, name="c")
    url = f"sqlite:///{tmp_path / 'c.db'}"
    res = run("-q", "run", str(spec), "--storage", url, "--workers", "1")
    assert res.exit_code == 0, res.output
    return url


def snapshot(study: optuna.Study) -> tuple:
    return (len(study.trials), study.best_trial.number, study.best_value)


def test_confirm_retrains_the_best_configs_with_fresh_seeds_apart_from_the_study(searched,
                                                                                synthetic_dir):
    study = optuna.load_study(study_name="c", storage=searched)
    before = snapshot(study)
    res = run("confirm", "c", "--top", "2", "--seeds", "3", "--storage", searched, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    ranked = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: -t.value)
    assert [c["trial"] for c in out["configs"]] == [t.number for t in ranked[:2]]
    assert out["seeds"] == 3 and out["objective"] == "val_accuracy"
    for c, trial in zip(out["configs"], ranked, strict=False):
        assert c["recorded"] == trial.value and len(c["values"]) == 3
        mean, sd = statistics.fmean(c["values"]), statistics.stdev(c["values"])
        half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
        assert c["mean"] == pytest.approx(mean)
        assert c["ci95"] == pytest.approx([mean - half, mean + half], rel=1e-3, abs=1e-3)
    top = out["configs"][0]
    assert out["winners_curse_pp"] == pytest.approx(top["recorded"] - top["mean"])
    assert "Welch's t-test" in out["verdict"]
    # the searched study is untouched: same trials, same best
    assert snapshot(optuna.load_study(study_name="c", storage=searched)) == before
    # the replicates: their own study, labelled, fresh seeds, and each re-runs bit for bit
    store = optuna.load_study(study_name="c-confirm", storage=searched)
    reps = [t for t in store.trials if confirms(t) == top["trial"]]
    label = f"trial-{top['trial']}"
    assert sorted(t.user_attrs["label"] for t in reps) == [label, f"{label}#2", f"{label}#3"]
    seeds = {t.user_attrs["seed"] for t in reps}
    assert len(seeds) == 3 and ranked[0].user_attrs["seed"] not in seeds
    assert sorted(t.value for t in reps) == sorted(top["values"])
    configs = [TrainConfig(**t.user_attrs["config"]) for t in reps]
    again = train_population(configs, load_data(str(synthetic_dir), val_size=96))
    assert [o.weights_digest() for o in again] == [t.user_attrs["weights_digest"] for t in reps]


def test_confirm_again_reuses_stored_replicates_and_trains_only_new_seeds(searched):
    study = optuna.load_study(study_name="c", storage=searched)
    first = ms.confirm(study, seeds=2)
    more = ms.confirm(study, seeds=3)
    assert more.configs[0].values[:2] == first.configs[0].values
    store = optuna.load_study(study_name="c-confirm", storage=searched)
    assert len(store.trials) == 3  # 2, then 1 more
    assert first.verdict.startswith("one config confirmed")


def test_confirm_refuses_a_missing_study_and_too_few_trials_in_one_line(searched):
    res = run("confirm", "nope", "--storage", searched)
    assert res.exit_code == 2 and "no study named 'nope'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = run("confirm", "c", "--top", "9", "--storage", searched)
    assert res.exit_code == 2 and "4 complete trials" in res.stderr and "--top 9" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def strict_json(text: str):
    """JSON as jq and JSON.parse read it: NaN and Infinity are not JSON."""
    def refuse(name: str):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_confirm_json_stays_json_when_a_stored_replicate_diverged(searched):
    res = run("confirm", "c", "--top", "1", "--seeds", "1", "--storage", searched, "--json")
    assert res.exit_code == 0, res.output
    store = optuna.load_study(study_name="c-confirm", storage=searched)
    first = store.trials[0]
    # the second replicate as a run stores one whose loss went non-finite
    store.add_trial(optuna.trial.create_trial(
        state=TrialState.FAIL, params=first.params, distributions=first.distributions,
        user_attrs={**first.user_attrs, "label": first.user_attrs["label"] + "#2",
                    "fail_reason": "nonfinite"}))
    res = run("confirm", "c", "--top", "1", "--seeds", "2", "--storage", searched, "--json")
    assert res.exit_code == 0, res.output
    out = strict_json(res.stdout)
    (config,) = out["configs"]
    assert config["values"] == [first.value, None]
    assert config["mean"] is None and config["ci95"] is None
    assert out["winners_curse_pp"] is None
    assert len(optuna.load_study(study_name="c-confirm", storage=searched).trials) == 2


def confirmed(trial: int, values: list[float]) -> Confirmed:
    return Confirmed(trial, values[0], tuple(values), summarize(values))


def test_verdict_names_the_test_and_sides_with_the_data():
    a, b = confirmed(1, [98.0, 98.1, 98.2]), confirmed(2, [97.0, 97.1, 97.2])
    # equal spreads: t = 1.0 / sqrt(2 * 0.01 / 3) = 12.25 on 4 degrees of freedom
    line = verdict([a, b], maximize=True)
    assert line.startswith("trial 1 beats trial 2 beyond seed noise (Welch's t-test, p = ")
    p = float(line.rsplit("= ", 1)[1].rstrip(")"))
    assert p == pytest.approx(2 * stats.t.sf(1.0 / math.sqrt(0.02 / 3), 4), rel=1e-2)
    assert "the runner-up, does better" in verdict([b, a], maximize=True)
    close = confirmed(3, [98.05, 97.2, 98.0])
    assert verdict([a, close], maximize=True).startswith("trial 1 does not beat trial 3")
    assert verdict([a, b], maximize=False).startswith("trial 2, the runner-up")
    assert "one seed each" in verdict([confirmed(1, [98.0]), confirmed(2, [97.0])], True)


def test_a_stopped_confirm_leaves_no_replicate_running(tmp_path, slow_synthetic_dir):
    """SIGTERM mid-training: the replicates in training are told FAIL and the command
    exits 130; the next confirm trains them again."""
    import os
    import signal
    import subprocess
    import time

    from helpers import exe

    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    study.set_user_attr("objectives", ["test_accuracy"])
    trial = study.ask()  # a finished trial whose config is slow to train: 200 epochs
    config = TrainConfig(dataset=str(slow_synthetic_dir), device="cpu", epochs=200, seed=3)
    trial.set_user_attr("config", config.to_dict())
    study.tell(trial, 50.0)
    proc = subprocess.Popen([exe("mnist-search"), "-q", "confirm", "s", "--seeds", "2",
                             "--storage", url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    def running() -> int:
        try:
            store = optuna.load_study(study_name="s-confirm", storage=url)
        except KeyError:
            return 0
        return sum(t.state == TrialState.RUNNING for t in store.trials)

    deadline = time.monotonic() + 120
    while running() < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # into training
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    store = optuna.load_study(study_name="s-confirm", storage=url)
    assert [t.state for t in store.trials] == [TrialState.FAIL, TrialState.FAIL]


def test_verdict_uses_welchs_test_not_students():
    """Unequal spreads and sizes, where the two tests disagree: Welch's p is the one shown.
    Welch's t and degrees of freedom are written out here, not taken from the code."""
    a = confirmed(1, [98.0, 98.02, 98.01, 98.03, 97.99, 98.0, 98.02, 98.01])
    b = confirmed(2, [97.2, 98.6, 96.9])
    va, vb = a.summary.std ** 2 / 8, b.summary.std ** 2 / 3
    t = (a.summary.mean - b.summary.mean) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / 7 + vb ** 2 / 2)
    welch = 2 * stats.t.sf(abs(t), df)
    student = float(stats.ttest_ind(a.values, b.values, equal_var=True).pvalue)
    assert abs(welch - student) > 0.05  # the case tells them apart
    line = verdict([a, b], maximize=True)
    assert float(line.rsplit("= ", 1)[1].rstrip(")")) == pytest.approx(welch, rel=1e-2)


def test_the_winners_curse_has_the_sign_of_flattery_when_minimizing():
    from mnist_search.search.confirm import ConfirmReport

    flattered = confirmed(4, [0.30, 0.31, 0.29])  # recorded 0.30 ...
    flattered = Confirmed(4, 0.20, flattered.values, flattered.summary)  # ... say 0.20
    low = ConfirmReport("s", 3, "train_seconds", False, (flattered,), "")
    assert low.winners_curse_pp == pytest.approx(0.10)  # the search flattered it: positive
    high = ConfirmReport("s", 3, "val_accuracy", True, (Confirmed(4, 99.0, (98.0,),
                                                                  summarize([98.0])),), "")
    assert high.winners_curse_pp == pytest.approx(1.0)


def test_replicates_draw_their_own_batch_order(searched):
    """A replicate is a fresh seed for everything: init, dropout and the batch order, not
    the trial's shared order (order_seed) with a new init."""
    study = optuna.load_study(study_name="c", storage=searched)
    ms.confirm(study, top=2, seeds=2)
    store = optuna.load_study(study_name="c-confirm", storage=searched)
    by_number = {t.number: t for t in study.trials}
    orders: dict[int, set[int]] = {}
    for rep in store.trials:
        config = rep.user_attrs["config"]
        trial = by_number[confirms(rep)]
        own = trial.user_attrs["config"]
        assert config["order_seed"] not in (own["order_seed"], own["seed"])
        assert config["order_skip"] == 0 and config["seed"] != own["seed"]
        orders.setdefault(trial.number, set()).add(config["order_seed"])
    assert [len(o) for o in orders.values()] == [2, 2]  # each replicate its own order
