"""The logic around CUDA graphs, on a CPU, with a stand-in graph.

A CUDA graph replays what was captured, and only a GPU can capture one (test_gpu.py, on a
GPU). Everything around the capture runs here: the warm-up steps and putting back every
tensor a step changes (Stack.mutable: weights, buffers, the step count, each optimizer's
state), the static masks filled from each member's generator before each replay, the loss
sums, the short last batch run eagerly, a lone stack's epoch and a mixed population's
epoch side by side, and a new graph when members leave. The stand-in captures nothing and
"replays" by running the captured body eagerly, counting no step in Python (as a replay
runs no Python). Pixel orders are off, as on a GPU. Each path must give the same bits as
the eager epoch.
"""

from __future__ import annotations

import pytest

from mnist_search.config import TrainConfig
from mnist_search.data import load_data
from mnist_search.training import engine, graphs, population
from mnist_search.training.population import Population
from mnist_search.training.train import TrainResult, train_population

BATCH = 50  # 512 images: ten full batches and a short one of 12, run eagerly


class StandInGraph(graphs.GraphedGroups):
    """GraphedGroups with the capture left out: its warm-up on no stream, and each replay
    the body run eagerly, the Python step count left as a replay leaves it."""

    made = 0

    def __init__(self, *args, **kwargs) -> None:
        StandInGraph.made += 1
        super().__init__(*args, **kwargs)

    def warm_up(self) -> None:
        for _ in range(2):
            self.body()

    def capture(self) -> None:
        pass

    def replay(self) -> None:
        steps = [s.steps for s in self.stacks]
        self.body()
        for s, n in zip(self.stacks, steps, strict=True):
            s.steps = n


def graphable_anywhere(stack) -> bool:
    """graphs.graphable without its device check."""
    return stack.use_graphs and not stack.input_dropout


@pytest.fixture()
def as_on_a_gpu(monkeypatch):
    """No pixel order, as on a GPU; the stand-in graph where a GPU would capture one."""
    monkeypatch.setattr(population, "pixel_order", lambda *args: None)

    def use_stand_in() -> None:
        StandInGraph.made = 0
        for module in (engine, population):
            monkeypatch.setattr(module, "graphable", graphable_anywhere)
            monkeypatch.setattr(module, "GraphedGroups", StandInGraph)

    return use_stand_in


def cfg(root, **kw) -> TrainConfig:
    return TrainConfig(**{**dict(dataset=str(root), device="cpu", epochs=2,
                                 batch_size=BATCH), **kw})


def results(outcomes) -> list[tuple[str, list[float]]]:
    assert all(isinstance(o, TrainResult) for o in outcomes), outcomes
    return [(o.weights_digest(), [r.train_loss for r in o.epochs]) for o in outcomes]


@pytest.mark.parametrize("extra", [
    dict(momentum=0.9),
    dict(optimizer="adam", lr=0.002, schedule="cosine", dropout=0.3),
    dict(optimizer="adamw", lr=0.001, weight_decay=0.05, max_norm=0.5, l1=0.001),
    dict(optimizer="nadam", lr=0.002, schedule="onecycle", momentum=0.5),
    dict(optimizer="rmsprop", lr=0.0005, momentum=0.5, schedule="cosine", l2=0.01),
])
def test_a_stack_through_a_stand_in_graph_equals_its_eager_epochs(synthetic_dir, as_on_a_gpu,
                                                                  extra):
    """The warm-up's two steps are undone exactly (weights, buffers, the step count, the
    optimizer's state): the replayed run equals the eager one to the bit, losses too."""
    data = load_data(str(synthetic_dir), device="cpu")
    configs = [cfg(synthetic_dir, seed=s, order_seed=7, **extra) for s in (1, 2, 3)]
    eager = results(train_population(configs, data))
    as_on_a_gpu()
    replayed = results(train_population(configs, data))
    assert StandInGraph.made == 1  # one capture, replayed for every full batch
    assert replayed == eager


def test_mixed_shapes_side_by_side_through_a_stand_in_equal_one_by_one(synthetic_dir,
                                                                       as_on_a_gpu):
    """A mixed population's groups in one graph: the same bits and losses as the groups
    trained one after another, including after a member leaves and the graph is made
    again for the stacks that stay."""
    data = load_data(str(synthetic_dir), device="cpu")
    members = [(0, cfg(synthetic_dir, hidden=(32, 16), seed=1, momentum=0.9)),
               (1, cfg(synthetic_dir, hidden=(64,), seed=2, dropout=0.3, epochs=1)),
               (2, cfg(synthetic_dir, hidden=(16, 16, 16), seed=3, epochs=3)),
               (3, cfg(synthetic_dir, hidden=(32, 16), seed=4, l2=0.01))]

    def run(concurrent: bool) -> dict[int, tuple[str, list[float]]]:
        pop = Population(data, "cpu", order_seed=5, concurrent=concurrent)
        pop.add(members)
        out = {}
        while len(pop):
            out.update({key: results([o])[0] for key, o in pop.run_epoch()})
        return out

    as_on_a_gpu()
    one_by_one = run(False)
    assert StandInGraph.made == 3  # each group's lone stack (not side by side)...
    StandInGraph.made = 0
    side_by_side = run(True)
    # ...and side by side: one graph for 3 groups, again without member 1, again for 2 alone
    assert StandInGraph.made == 3
    assert side_by_side == one_by_one
    assert len({digest for digest, _ in side_by_side.values()}) == 4


class FailingCapture(StandInGraph):
    """A capture that fails, as an op CUDA cannot capture would."""

    def capture(self) -> None:
        raise RuntimeError("operation not permitted when stream is capturing")


class FailingReplay(StandInGraph):
    """Replays that work twice, then fail."""

    def replay(self) -> None:
        self.replays = getattr(self, "replays", 0) + 1
        if self.replays > 2:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        super().replay()


@pytest.mark.parametrize("graph", [FailingCapture, FailingReplay])
@pytest.mark.parametrize("side_by_side", [False, True])
def test_a_graph_that_fails_costs_no_run_its_stacks_train_eagerly(
        synthetic_dir, as_on_a_gpu, monkeypatch, caplog, graph, side_by_side):
    """Graphs are an optimization: a capture or replay that fails makes its stacks step
    eagerly, the run goes on to the same bits as an eager one, and it is said once."""
    data = load_data(str(synthetic_dir), device="cpu")
    members = [(0, cfg(synthetic_dir, seed=1, momentum=0.9)),
               (1, cfg(synthetic_dir, seed=2, l2=0.01)),
               (2, cfg(synthetic_dir, hidden=(16, 16), seed=3, epochs=3))]

    def run() -> dict[int, tuple[str, list[float]]]:
        pop = Population(data, "cpu", order_seed=5, concurrent=side_by_side)
        pop.add(members)
        out = {}
        while len(pop):
            out.update({key: results([o])[0] for key, o in pop.run_epoch()})
        return out

    eager = run()
    as_on_a_gpu()
    for module in (engine, population):
        monkeypatch.setattr(module, "GraphedGroups", graph)
    monkeypatch.setattr(graphs, "_told", False)
    with caplog.at_level("WARNING", logger="mnist_search"):
        survived = run()
    assert survived == eager
    told = [r for r in caplog.records if "CUDA graph" in r.getMessage()]
    assert len(told) == 1 and "train eagerly" in told[0].getMessage()
