"""The CUDA paths: graph replay against the eager step, mixed populations side by side,
bucketed members of different widths.

Every test here carries the `gpu` marker and is skipped, with that reason, where no CUDA
device is present (conftest.py); bench/gpu_check.sh runs them on a GPU before its
benchmarks. Each compares weights digests, so "equal" means bit-identical models.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mnist_search.config import TrainConfig
from mnist_search.data import load_data
from mnist_search.training import graphs
from mnist_search.training.population import Population
from mnist_search.training.train import TrainResult, train, train_population

pytestmark = pytest.mark.gpu


def cfg(root, **kw) -> TrainConfig:
    return TrainConfig(**{**dict(dataset=str(root), device="cuda", epochs=2), **kw})


def count_captures(monkeypatch) -> list[int]:
    """Counts GraphedGroups captures, so a test knows the graph path really ran."""
    calls = [0]
    original = graphs.GraphedGroups.__init__

    def counted(self, *args, **kwargs):
        calls[0] += 1
        original(self, *args, **kwargs)

    monkeypatch.setattr(graphs.GraphedGroups, "__init__", counted)
    return calls


def digests(outcomes) -> list[str]:
    assert all(isinstance(o, TrainResult) for o in outcomes), outcomes
    return [o.weights_digest() for o in outcomes]


@pytest.mark.parametrize("extra,graphed", [
    (dict(), True), (dict(dropout=0.4), True), (dict(max_norm=0.5, dropout=0.2), True),
    (dict(input_dropout=0.2), False),  # its masks are drawn inside the step: eager
])
def test_graph_replay_equals_the_eager_step(synthetic_dir, monkeypatch, extra, graphed):
    """A stack sharing one batch order replays its captured step; switching graphs off
    runs the same stack eagerly: every member's weights must be the same bits."""
    data = load_data(str(synthetic_dir), device="cuda")
    configs = [cfg(synthetic_dir, seed=s, order_seed=7, momentum=0.9, **extra)
               for s in (1, 2, 3)]
    captured = count_captures(monkeypatch)
    replayed = digests(train_population(configs, data))
    assert captured == [int(graphed)]  # one capture for the stack, replayed every batch
    eager = digests(train_population(configs, data, use_graphs=False))
    assert captured == [int(graphed)]
    assert replayed == eager
    assert len(set(replayed)) == 3  # three different models, not one thrice


@pytest.mark.parametrize("optimizer,schedule", [
    ("sgd", "cosine"), ("sgd", "onecycle"), ("adam", "constant"), ("adam", "cosine"),
    ("adamw", "onecycle"), ("rmsprop", "cosine"), ("nadam", "constant"), ("nadam", "onecycle"),
])
def test_every_rule_and_schedule_replays_as_a_graph_bit_for_bit(synthetic_dir, monkeypatch,
                                                                 optimizer, schedule):
    """The numbers a step changes (step count, bias corrections, the schedule's factor) are
    device tensors the captured step updates itself: a replay is the eager step's bits."""
    data = load_data(str(synthetic_dir), device="cuda")
    configs = [cfg(synthetic_dir, seed=s, order_seed=7, optimizer=optimizer, schedule=schedule,
                   lr=lr, momentum=m, weight_decay=w, dropout=0.2)
               for s, lr, m, w in ((1, 0.002, 0.0, 0.0), (2, 0.001, 0.5, 0.01))]
    captured = count_captures(monkeypatch)
    replayed = digests(train_population(configs, data))
    assert captured == [1]
    assert replayed == digests(train_population(configs, data, use_graphs=False))


def test_mixed_shapes_side_by_side_equal_their_runs_alone(synthetic_dir, monkeypatch):
    """Groups of different shapes in one CUDA graph (each on its own stream) equal the
    same groups trained one after another, and each member its own re-run."""
    data = load_data(str(synthetic_dir), device="cuda")
    members = [(0, cfg(synthetic_dir, hidden=(32, 16), seed=1, momentum=0.9)),
               (1, cfg(synthetic_dir, hidden=(64,), seed=2, dropout=0.3)),
               (2, cfg(synthetic_dir, hidden=(16, 16, 16), seed=3)),
               (3, cfg(synthetic_dir, hidden=(32, 16), seed=4, l2=0.01))]

    def run(concurrent: bool) -> tuple[dict[int, str], list[TrainConfig]]:
        pop = Population(data, "cuda", order_seed=5, concurrent=concurrent)
        joined = pop.add(members)
        assert pop.side_by_side is concurrent
        out: dict[int, str] = {}
        while len(pop):
            out.update({k: digests([o])[0] for k, o in pop.run_epoch()})
        return out, joined

    side_by_side, joined = run(True)
    one_by_one, _ = run(False)
    assert side_by_side == one_by_one
    assert len(set(side_by_side.values())) == 4
    # as `rerun` trains them again: a lone member alone, the stack of 0 and 3 together
    # (a stack's batched GEMMs round differently from a lone model's)
    for key in (1, 2):
        assert train(joined[key], data).weights_digest() == side_by_side[key]
    assert digests(train_population([joined[0], joined[3]], data)) == \
        [side_by_side[0], side_by_side[3]]


def test_bucketed_members_rerun_bit_for_bit_and_are_their_own_models(synthetic_dir):
    """Members of different widths, padded into one bucket and replayed as one graph:
    re-run from their recorded configs they give the same bits, and each is its own
    model (its own shapes, its own run's weights to rounding)."""
    data = load_data(str(synthetic_dir), device="cuda")
    pop = Population(data, "cuda", order_seed=9, bucket=True)
    recorded = pop.add([(0, cfg(synthetic_dir, hidden=(32, 16), seed=1, momentum=0.9)),
                        (1, cfg(synthetic_dir, hidden=(48, 24), seed=2, dropout=0.3)),
                        (2, cfg(synthetic_dir, hidden=(16,), seed=3))])
    assert [c.pad_hidden for c in recorded] == [(48, 32), (48, 32), None]
    first: dict[int, TrainResult] = {}
    while len(pop):
        first.update(pop.run_epoch())
    again = train_population(recorded[:2], data)
    assert digests(again) == [first[0].weights_digest(), first[1].weights_digest()]
    for key in (0, 1):
        own = train(dataclasses.replace(recorded[key], pad_hidden=None), data)
        for name, tensor in own.state_dict.items():
            torch.testing.assert_close(first[key].state_dict[name], tensor,
                                       rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("optimizer,schedule", [("adam", "cosine"), ("adamw", "onecycle"),
                                                ("rmsprop", "constant")])
def test_every_optimizer_trains_on_the_gpu_as_torch_optim_does(synthetic_dir, optimizer,
                                                               schedule):
    """The optimizers' state lives on the stack's device: two members with their own lr,
    weight decay and momentum, trained on the GPU, equal torch.optim's loop on the CPU to
    rounding (no dropout: CUDA and CPU draw different masks)."""
    from test_train import reference_run

    from mnist_search.training.mlp import linear_layers

    cpu_data = load_data(str(synthetic_dir))
    configs = [cfg(synthetic_dir, optimizer=optimizer, schedule=schedule, seed=s, lr=lr,
                   weight_decay=wd, momentum=m, order_seed=3, epochs=2)
               for s, lr, wd, m in [(0, 0.001, 0.0, 0.0), (1, 0.002, 0.01, 0.5)]]
    out = train_population(configs, load_data(str(synthetic_dir), device="cuda"))
    for config, member in zip(configs, out, strict=True):
        assert isinstance(member, TrainResult), member
        model, means, _ = reference_run(dataclasses.replace(config, device="cpu"), cpu_data)
        for a, b in zip(linear_layers(member.model().cpu()), linear_layers(model), strict=True):
            torch.testing.assert_close(a.weight, b.weight, rtol=1e-3, atol=1e-4)
            torch.testing.assert_close(a.bias, b.bias, rtol=1e-3, atol=1e-4)
        assert member.train_loss == pytest.approx(means, rel=1e-3)
