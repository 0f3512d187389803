"""Populations of mixed shapes whose members join and leave at epoch boundaries."""

from __future__ import annotations

import time

import pytest

from mnist_search.config import TrainConfig
from mnist_search.data import load_data
from mnist_search.data.synthetic import write_synthetic
from mnist_search.training.population import Population
from mnist_search.training.train import (
    NonFiniteLossError,
    OutOfTime,
    StopTraining,
    TrainResult,
    train,
    train_population,
)


@pytest.fixture(scope="module", params=["plain", "blank-margins"])
def data_dir(request, tmp_path_factory):
    margin = 0 if request.param == "plain" else 6
    return write_synthetic(tmp_path_factory.mktemp(request.param), n_train=384, n_test=96,
                           seed=5, margin=margin)


def cfg(root, **kw) -> TrainConfig:
    return TrainConfig(**{**dict(dataset=str(root), device="cpu", epochs=2), **kw})


def run_all(pop: Population, joins: dict[int, list], on_epoch=None) -> dict:
    """Run until empty; joins[e] = (key, config) pairs joining before population epoch e."""
    out, recorded = {}, {}
    while len(pop) or any(e >= pop.epoch for e in joins):
        for key, config in zip([k for k, _ in joins.get(pop.epoch, [])],
                               pop.add(joins.get(pop.epoch, [])), strict=True):
            recorded[key] = config
        out.update(pop.run_epoch(on_epoch))
    return {k: (recorded[k], v) for k, v in out.items()}


def test_each_member_equals_its_own_run_alone_bit_for_bit(data_dir):
    """Shapes differ, members join at epochs 0, 1 and 2, and each re-runs alone from its
    recorded config (order seed and epochs skipped) to the very same weights."""
    data = load_data(str(data_dir))
    joins = {0: [(0, cfg(data_dir, hidden=(32, 16), momentum=0.9, seed=1)),
                 (1, cfg(data_dir, hidden=(64,), dropout=0.3, seed=2, epochs=3))],
             1: [(2, cfg(data_dir, hidden=(32, 16), l2=0.01, seed=3)),
                 (3, cfg(data_dir, hidden=(16, 16, 16), seed=4, epochs=1))],
             2: [(4, cfg(data_dir, hidden=(64,), optimizer="adam", lr=0.002, seed=5))]}
    pop = Population(data, "cpu", order_seed=11)
    results = run_all(pop, joins)
    assert sorted(results) == [0, 1, 2, 3, 4] and len(pop) == 0
    for key, (config, result) in results.items():
        assert isinstance(result, TrainResult)
        assert config.order_seed == 11 and config.order_skip == min(key // 2 + key // 4, 2)
        alone = train(config, data)
        assert alone.weights_digest() == result.weights_digest(), key
        assert alone.train_loss == result.train_loss
        assert alone.test_accuracy == result.test_accuracy
    # joining later means other batches: the same config joining at epoch 0 differs
    late = results[2][0]
    early = train(late.__class__(**{**late.to_dict(), "order_skip": 0}), data)
    assert early.weights_digest() != results[2][1].weights_digest()


def test_same_shape_joiners_stack_and_rerun_together(data_dir):
    data = load_data(str(data_dir))
    pop = Population(data, "cpu", order_seed=3)
    members = [(k, cfg(data_dir, momentum=m, seed=k)) for k, m in enumerate((0.0, 0.5, 0.9))]
    configs = pop.add(members)
    assert len(pop.groups) == 1 and len(pop) == 3
    results = dict(pop.run_epoch() + pop.run_epoch())
    again = train_population(configs, data)
    for k, res in results.items():
        assert res.population_size == 3
        assert res.weights_digest() == again[k].weights_digest()


def test_stopped_and_diverging_members_leave_and_free_their_slot(data_dir):
    data = load_data(str(data_dir))
    pop = Population(data, "cpu", order_seed=0)
    pop.add([("pruned", cfg(data_dir, epochs=3)), ("nan", cfg(data_dir, lr=1e12, momentum=0.9,
                                                             epochs=3)),
             ("ok", cfg(data_dir, hidden=(32,), epochs=3))])

    def prune(key, report):
        if key == "pruned" and report.epoch == 1:
            raise StopTraining("pruned")

    ended = dict(pop.run_epoch(prune))  # lr 1e12 diverges in its first epoch
    assert set(ended) == {"pruned", "nan"}
    assert isinstance(ended["pruned"], StopTraining)
    assert isinstance(ended["nan"], NonFiniteLossError)
    assert len(pop) == 1 and pop.stack_of("ok") == ["ok"]  # both slots are free
    ended.update(pop.run_epoch(prune))
    assert set(ended) == {"pruned", "nan"} and len(pop) == 1
    ended.update(pop.run_epoch(prune))
    assert isinstance(ended["ok"], TrainResult) and len(ended["ok"].epochs) == 3
    assert len(pop) == 0 and pop.groups == []


def test_deadline_stops_members_with_epochs_left_at_the_boundary(data_dir):
    data = load_data(str(data_dir))
    pop = Population(data, "cpu", order_seed=0)
    pop.add([(0, cfg(data_dir, epochs=1)), (1, cfg(data_dir, hidden=(32,), epochs=4))])
    ended = dict(pop.run_epoch(deadline=time.time() - 1))
    assert isinstance(ended[0], TrainResult)  # its last epoch: finished, not cut
    assert isinstance(ended[1], OutOfTime) and ended[1].epoch == 1


def test_members_must_share_batch_size_data_and_device(data_dir):
    data = load_data(str(data_dir))
    pop = Population(data, "cpu", order_seed=0)
    pop.add([(0, cfg(data_dir))])
    assert pop.fits(cfg(data_dir, hidden=(8,), momentum=0.3))
    assert not pop.fits(cfg(data_dir, batch_size=32))
    with pytest.raises(ValueError, match="one batch size"):
        pop.add([(1, cfg(data_dir, batch_size=32))])


def test_without_a_shared_order_each_group_trains_as_it_would_alone(data_dir):
    """order_seed None (a CPU worker): a lone member keeps its own seed's batch order and
    a stack its first member's, whoever else shares the population and whenever it joins,
    so results do not depend on how trials were split between workers."""
    data = load_data(str(data_dir))
    pop = Population(data, "cpu", order_seed=None)
    lone = cfg(data_dir, hidden=(48,), momentum=0.9, seed=7)
    pair = [cfg(data_dir, seed=8, momentum=0.5), cfg(data_dir, seed=9, l1=0.001)]
    results = run_all(pop, {0: [("lone", lone)], 1: list(zip(("a", "b"), pair, strict=True))})
    config, result = results["lone"]
    assert config == lone  # recorded as given: its own order
    assert result.weights_digest() == train(lone, data).weights_digest()
    recorded = [results[k][0] for k in ("a", "b")]
    assert {c.order_seed for c in recorded} == {8} and {c.order_skip for c in recorded} == {0}
    again = train_population(recorded, data)
    for k, res in zip(("a", "b"), again, strict=True):
        assert results[k][1].weights_digest() == res.weights_digest()
