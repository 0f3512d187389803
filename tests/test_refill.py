"""A worker's slots refilled at epoch boundaries (`run --mix`): trials of any shape train
side by side, each is told the moment it ends, and each re-runs alone bit for bit."""

from __future__ import annotations

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

import mnist_search as ms
from mnist_search.cli import cli

from helpers import write_study

MIXED = """
trials = 10
[sampler]
kind = "random"
[pruner]
kind = "median"
n_startup_trials = 3
n_warmup_steps = 1
[fixed]
dataset = DATA
[search]
epochs = { low = 1, high = 4 }
depth = { low = 1, high = 2 }
width = { low = 16, high = 128, log = true }
momentum = { low = 0.0, high = 0.9 }
dropout = { low = 0.0, high = 0.5 }
[[reference]]
label = "base"
epochs = 3
[[reference]]
label = "momentum"
momentum = 0.9
epochs = 3
"""


def _run(spec, url, *args):
    res = CliRunner().invoke(cli, ["-q", "run", str(spec), "--storage", url, "--workers", "1",
                                   *args], obj={})
    assert res.exit_code == 0, res.output
    return optuna.load_study(study_name="mixed", storage=url)


def _overlapping_shapes(trials) -> int:
    """Pairs of trials of different shapes that were training at the same time."""
    pairs = 0
    for a in trials:
        for b in trials:
            if a.number < b.number and a.user_attrs["config"]["hidden"] != \
                    b.user_attrs["config"]["hidden"] and a.datetime_start < \
                    b.datetime_complete and b.datetime_start < a.datetime_complete:
                pairs += 1
    return pairs


@pytest.fixture(scope="module")
def mixed_study(tmp_path_factory, synthetic_dir):
    tmp = tmp_path_factory.mktemp("refill")
    spec = write_study(tmp / "mixed.toml", synthetic_dir, MIXED, name="mixed")
    url = f"sqlite:///{tmp / 'mixed.db'}"
    return _run(spec, url, "--mix", "--population", "4"), spec, tmp


def test_slots_refill_with_trials_of_any_shape_told_as_they_end(mixed_study):
    study, _, _ = mixed_study
    trials = study.get_trials()
    assert len(trials) == 10
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    configs = [t.user_attrs["config"] for t in trials]
    # one batch order per population (a new one starts if the worker's ever empties)
    assert len({c["order_seed"] for c in configs}) < len(configs) / 2
    joined_later = [t for t in trials if t.user_attrs["config"]["order_skip"] > 0]
    assert len(joined_later) >= 3  # slots were refilled at epoch boundaries
    assert _overlapping_shapes(trials) > 0
    # told when they ended, not when the population emptied: the first finished trial
    # was complete before the last one joined
    first_done = min(t.datetime_complete for t in trials)
    assert first_done < max(t.datetime_start for t in trials)
    for t in trials:  # each trial's epochs: its own, as many as it ran
        epochs, ran = t.user_attrs["config"]["epochs"], len(t.intermediate_values)
        assert sorted(t.intermediate_values) == list(range(1, ran + 1))
        assert len(t.user_attrs["train_loss"]) == ran  # its own curve, as long as its run
        if t.state == TrialState.COMPLETE:
            assert ran == epochs
        else:  # pruned at an epoch boundary (the pruner is asked after its last one too)
            assert 1 <= ran <= epochs


def test_a_trial_that_joined_a_running_population_reruns_bit_for_bit(mixed_study):
    study, _, _ = mixed_study
    late = [t for t in study.get_trials() if t.state == TrialState.COMPLETE
            and t.user_attrs["config"]["order_skip"] > 0]
    assert late
    for trial in late[:2]:
        _, outcome = ms.rerun_trial(study, trial.number)
        # the verdict is taken here, from the recorded digest, not from the rerun's report
        assert isinstance(outcome, ms.TrainResult)
        assert outcome.weights_digest() == trial.user_attrs["weights_digest"]
        assert round(outcome.test_accuracy, 4) == trial.user_attrs["test_accuracy"]


def test_without_mix_a_cpu_worker_trains_one_sampled_shape_at_a_time(mixed_study):
    _, spec, tmp = mixed_study
    study = _run(spec, f"sqlite:///{tmp / 'plain.db'}", "--population", "4")
    sampled = [t for t in study.get_trials() if not t.user_attrs.get("label")]
    assert len(sampled) == 8
    assert _overlapping_shapes(sampled) == 0
    assert all(t.user_attrs["config"]["order_skip"] == 0 for t in study.get_trials())
    # each sampled trial trains on its own seed's order, whoever else this worker ran
    assert all(t.user_attrs["config"]["order_seed"] is None for t in sampled)


def test_a_searched_batch_size_mixes_into_populations_of_its_own(tmp_path, synthetic_dir):
    """Claims of different batch sizes cannot share a population (one batch order, one
    graph): each batch size gets its own, and every trial still trains."""
    text = MIXED.replace("[search]\n", "[search]\nbatch_size = [32, 64]\n")
    spec = write_study(tmp_path / "mixed.toml", synthetic_dir, text, name="mixed")
    study = _run(spec, f"sqlite:///{tmp_path / 'b.db'}", "--mix", "--population", "4")
    trials = study.get_trials()
    assert len(trials) == 10
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    sizes = [t.user_attrs["config"]["batch_size"] for t in trials]
    assert {32, 64} <= set(sizes)
    # both batch sizes were training at once, in populations side by side
    assert any(a.user_attrs["config"]["batch_size"] != b.user_attrs["config"]["batch_size"]
               and a.datetime_start < b.datetime_complete
               and b.datetime_start < a.datetime_complete for a in trials for b in trials)
