"""The public Objective in the user's own Optuna code, in process: FixedTrial, an in-memory
study with the user's sampler, a stored study from open_study, ask-and-tell, pruning."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

import mnist_search as ms
from mnist_search.data import load_data
from mnist_search.errors import DeviceError, SpecError

from helpers import write_study

STUDY = """
objective = "val_accuracy"
[sampler]
kind = "tpe"
n_startup_trials = 2
[pruner]
kind = "median"
[fixed]
dataset = DATA
epochs = 2
lr = 0.05
val_size = 100
[search]
momentum = { low = 0.0, high = 0.9 }
dropout = [0.0, 0.3]
[[reference]]
label = "wide"
hidden = [256, 128]
[[reference]]
label = "momentum-0.9"
momentum = 0.9
"""

RECORDED = ("seed", "architecture", "config", "parameters", "train_loss", "last_batch_loss",
            "test_accuracy_curve", "test_accuracy", "val_accuracy",
            "penalised_layer_zero_fraction", "penalised_layer_small_fraction", "stack_seconds",
            "member_seconds", "population_size",
            "device", "data_digest", "torch_version", "optuna_version")


@pytest.fixture()
def spec_file(tmp_path, synthetic_dir):
    return write_study(tmp_path / "obj.toml", synthetic_dir, STUDY)


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_fixed_trial_runs_the_objective_without_a_study(spec_file):
    objective = ms.Objective(spec_file, device="cpu")
    trial = optuna.trial.FixedTrial({"momentum": 0.5, "dropout": 0.3}, number=4)
    value = objective(trial)
    assert 0.0 <= value <= 100.0
    attrs = trial.user_attrs
    assert value == attrs["val_accuracy"] != attrs["test_accuracy"]  # the study's objective
    assert all(key in attrs for key in RECORDED)
    assert attrs["config"]["momentum"] == 0.5 and attrs["config"]["dropout"] == 0.3
    assert attrs["config"]["epochs"] == 2 and len(attrs["train_loss"]) == 2
    again = optuna.trial.FixedTrial({"momentum": 0.5, "dropout": 0.3}, number=4)
    assert objective(again) == value and again.user_attrs["seed"] == attrs["seed"]


def test_in_memory_study_with_the_users_sampler_loads_data_once(spec_file, monkeypatch):
    import mnist_search.training.train as train_mod

    loads = []
    real = train_mod.load_for
    monkeypatch.setattr(train_mod, "load_for", lambda *a: loads.append(a) or real(*a))
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(ms.Objective(spec_file, device="cpu", epochs=1), n_trials=3)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert len(loads) == 1  # data is loaded once per Objective, not once per trial
    for t in trials:
        assert t.value == t.user_attrs["val_accuracy"]
        assert t.user_attrs["config"]["epochs"] == 1  # the override, not the file's 2
        assert len(t.intermediate_values) == 1
    assert len({t.user_attrs["seed"] for t in trials}) == 3


def test_stored_study_from_open_study_runs_references_once_then_searches(spec_file,
                                                                        tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = ms.open_study(spec_file, url)
    assert ms.open_study(spec_file, url).study_name == "obj"  # a second open enqueues none
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert sorted(t.user_attrs["label"] for t in waiting) == ["momentum-0.9", "wide"]
    study.optimize(ms.Objective(spec_file, device="cpu"), n_trials=4)
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    by_label = {t.user_attrs.get("label"): t for t in trials}
    assert tuple(by_label["wide"].user_attrs["config"]["hidden"]) == (256, 128)
    assert by_label["momentum-0.9"].user_attrs["config"]["momentum"] == 0.9
    assert by_label["momentum-0.9"].user_attrs["config"]["hidden"] == [128, 64]
    assert isinstance(study.sampler, optuna.samplers.TPESampler)
    assert isinstance(study.pruner, optuna.pruners.MedianPruner)


def test_ask_and_tell(spec_file, synthetic_dir):
    study = optuna.create_study(direction="maximize")
    objective = ms.Objective(spec_file, device="cpu", epochs=1,
                             data=load_data(str(synthetic_dir), val_size=100))
    trial = study.ask()
    study.tell(trial, objective(trial))
    done = study.get_trials()[0]
    assert done.state == TrialState.COMPLETE and done.value == done.user_attrs["val_accuracy"]


def test_pruning_raises_trial_pruned_but_never_for_a_reference(spec_file):
    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    objective = ms.Objective(spec_file, device="cpu")
    with pytest.raises(optuna.TrialPruned):
        objective(study.ask())
    study.enqueue_trial({"momentum": 0.9, "dropout": 0.0}, user_attrs={"label": "x"})
    study.optimize(objective, n_trials=2)
    states = {t.user_attrs.get("label"): t for t in study.get_trials()[1:]}
    assert states["x"].state == TrialState.COMPLETE
    assert len(states["x"].intermediate_values) == 2  # every epoch, though always prunable
    assert states[None].state == TrialState.PRUNED
    assert states[None].user_attrs["fail_reason"] == "pruned"
    assert len(states[None].intermediate_values) == 1


def test_a_diverging_trial_fails_and_the_study_goes_on(spec_file):
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"momentum": 0.9, "dropout": 0.0})
    study.optimize(ms.Objective(spec_file, device="cpu", lr=1e12, epochs=2), n_trials=1)
    study.optimize(ms.Objective(spec_file, device="cpu", epochs=2), n_trials=1)
    first, second = study.get_trials()
    assert first.state == TrialState.FAIL and first.user_attrs["fail_reason"] == "nonfinite"
    assert second.state == TrialState.COMPLETE and second.value > 0  # the study went on


@pytest.mark.parametrize("override,fragment", [
    ({"epochs": 0}, "fixed.epochs = 0 is not allowed"),
    ({"momentum": 0.5}, "search.momentum is also set in [fixed]"),
    ({"colour": 1}, "unknown key fixed.colour"),
    ({"val_size": 0}, "set fixed.val_size > 0"),
])
def test_overrides_are_checked_like_the_file(spec_file, override, fragment):
    with pytest.raises(SpecError) as err:
        ms.Objective(spec_file, device="cpu", **override)
    message = str(err.value)
    assert fragment in message and str(spec_file) in message and "\n" not in message


def test_an_unknown_device_is_refused(spec_file):
    with pytest.raises(DeviceError, match="tpu"):
        ms.Objective(spec_file, device="tpu")


def test_the_issue_example_shape_on_the_shipped_search_file(synthetic_dir):
    """studies/search.toml with its depth/width/penalty space, run on synthetic data."""
    from mnist_search.spec import load_spec

    spec = load_spec("studies/search.toml")
    objective = ms.Objective(spec, device="cpu", epochs=1, dataset=str(synthetic_dir),
                             val_size=100)
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=3)
    assert all(math.isfinite(t.value) for t in study.get_trials())
    assert {"depth", "width_1", "penalty", "momentum", "dropout"} <= set(study.best_params)


def test_a_study_scored_on_val_accuracy_reports_and_prunes_on_it(spec_file):
    """What is reported each epoch (and so pruned on) is the holdout's accuracy, not the
    test set's: a study scored on val_accuracy must never select on test."""
    study = optuna.create_study(direction="maximize")
    study.optimize(ms.Objective(spec_file, device="cpu"), n_trials=2)
    for t in study.trials:
        reported = [t.intermediate_values[e] for e in sorted(t.intermediate_values)]
        test_curve = t.user_attrs["test_accuracy_curve"]
        assert len(reported) == len(test_curve) == 2
        assert reported[-1] == pytest.approx(t.user_attrs["val_accuracy"]) == t.value
        assert reported != pytest.approx(test_curve), "reported the test set's accuracy"
