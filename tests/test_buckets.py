"""Members of different widths stacked in one bucket: padded units held at exactly zero,
each member its own model, the bucket recorded so a re-run is bit for bit."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mnist_search.config import ConfigError, TrainConfig
from mnist_search.data import load_data
from mnist_search.training.engine import Stack
from mnist_search.training.population import Population, buckets
from mnist_search.training.train import TrainResult, train, train_population


def cfg(root, **kw) -> TrainConfig:
    return TrainConfig(**{**dict(dataset=str(root), device="cpu", epochs=2), **kw})


@pytest.fixture()
def synth(synthetic_dir):
    return load_data(str(synthetic_dir))


def test_buckets_pad_each_depth_to_its_widest_layer_rounded_up(synthetic_dir):
    configs = [cfg(synthetic_dir, hidden=h) for h in
               [(20, 100), (64, 8), (300,), (30,), (16, 16, 16)]]
    padded = buckets(configs)
    assert [c.pad_hidden for c in padded] == [(64, 112), (64, 112), (304,), (304,), None]
    assert [c.hidden for c in padded] == [c.hidden for c in configs]  # the models stay theirs
    assert len({c.stack_key() for c in padded}) == 3
    adam = dataclasses.replace(configs[1], optimizer="adam")  # another kind: its own stack
    assert buckets([configs[0], adam]) == [configs[0], adam]


def test_many_of_a_depth_are_bucketed_by_width_quantiles(synthetic_dir):
    """40 one-layer widths 16..640 (given in a shuffled order) in quantiles of about 16: three
    buckets of neighbouring widths, each padded to its own widest, not all to 640."""
    widths = [16 * i for i in range(1, 41)]
    shuffled = widths[::7] + [w for w in widths if w not in widths[::7]]
    configs = [cfg(synthetic_dir, hidden=(w,)) for w in shuffled]
    padded = buckets(configs, members=16)
    pad_of = {c.hidden[0]: c.pad_hidden for c in padded}
    assert [pad_of[w] for w in (16, 208, 224, 416, 432, 640)] == \
        [(208,), (208,), (416,), (416,), (640,), (640,)]
    assert len({c.stack_key() for c in padded}) == 3
    assert buckets(configs, members=40) == buckets(configs, members=100)  # one per depth
    assert {c.pad_hidden for c in buckets(configs, members=40)} == {(640,)}


def test_pad_hidden_must_cover_hidden():
    with pytest.raises(ConfigError, match="pad_hidden"):
        TrainConfig(hidden=(64, 32), pad_hidden=(64,))
    with pytest.raises(ConfigError, match="pad_hidden"):
        TrainConfig(hidden=(64, 32), pad_hidden=(48, 32))
    assert TrainConfig(hidden=[64], pad_hidden=[80]).to_dict()["pad_hidden"] == [80]


@pytest.mark.parametrize("kind", [
    dict(optimizer="sgd", momentum=0.9, l1=0.001, dropout=0.3, dropout_after="all"),
    dict(optimizer="adam", lr=0.002, l2=0.01, weight_decay=1e-4),
    dict(optimizer="rmsprop", lr=0.001, momentum=0.5, schedule="cosine"),
])
def test_padded_units_stay_exactly_zero(synthetic_dir, synth, kind):
    """After training, every padded weight, bias, momentum/gradient buffer and optimizer
    state entry of each member is exactly 0."""
    configs = buckets([cfg(synthetic_dir, hidden=(24, 40), seed=1, **kind),
                       cfg(synthetic_dir, hidden=(48, 16), seed=2, **kind)])
    stack = Stack(configs, "cpu", total_steps=2 * 8)
    perm = torch.randperm(len(synth.train), generator=torch.Generator().manual_seed(0))
    stack.run_epoch(synth.train, [perm, perm], 64)
    states = [stack.flat, stack.buf, *stack.rule.state.values()]
    for buffer in states:
        views = stack.layout.views(buffer, 2)
        layers = len(stack.shapes)
        for pos, member in enumerate(stack.members):
            for j, (out, inp) in enumerate(stack.own[member]):
                w, b = views[j][pos].clone(), views[layers + j][pos, 0].clone()
                if j == 0:  # stored transposed: views[0][pos] is [out, 784]
                    w[:out] = 0
                else:
                    w[:out, :inp] = 0
                b[:out] = 0
                assert not w.any() and not b.any(), (pos, j)
    assert stack.flat.abs().sum() > 0  # the members themselves did train


def test_each_bucketed_member_is_its_own_model(synthetic_dir, synth):
    """Trained padded, a member has its own shapes and the weights of training its own
    model alone (to rounding: the sums have other shapes), dropout masks included."""
    configs = buckets([cfg(synthetic_dir, hidden=(32, 16), seed=1, momentum=0.9),
                       cfg(synthetic_dir, hidden=(40, 8), seed=2, dropout=0.4),
                       cfg(synthetic_dir, hidden=(64, 48), seed=3, l2=0.01)])
    assert {c.pad_hidden for c in configs} == {(64, 48)}
    together = train_population(configs, synth)
    for config, res in zip(configs, together, strict=True):
        assert isinstance(res, TrainResult)
        own = train(dataclasses.replace(config, pad_hidden=None), synth)
        assert {k: v.shape for k, v in res.state_dict.items()} == \
            {k: v.shape for k, v in own.state_dict.items()}
        for key in own.state_dict:
            torch.testing.assert_close(res.state_dict[key], own.state_dict[key],
                                       rtol=1e-4, atol=1e-5, msg=key)
        assert res.test_accuracy == pytest.approx(own.test_accuracy, abs=1e-3)
        assert res.model()(synth.test.x[:5]).shape == (5, 10)
        assert res.parameter_count == own.parameter_count


def test_a_bucket_reruns_bit_for_bit_from_its_recorded_configs(synthetic_dir, synth):
    """What a trial records (its config with the bucket) trains the same bits again."""
    pop = Population(synth, "cpu", order_seed=3, bucket=True)
    recorded = pop.add([(0, cfg(synthetic_dir, hidden=(32, 16), seed=1)),
                        (1, cfg(synthetic_dir, hidden=(48, 24), seed=2, dropout=0.2))])
    assert pop.stack_of(0) == [0, 1] and recorded[0].pad_hidden == (48, 32)
    first: dict[int, str] = {}
    while len(pop):
        first.update({k: o.weights_digest() for k, o in pop.run_epoch()})
    again = train_population([TrainConfig(**c.to_dict()) for c in recorded], synth)
    assert [o.weights_digest() for o in again] == [first[0], first[1]]

