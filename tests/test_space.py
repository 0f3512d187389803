"""The search-space kinds, in process: suggest, encode, decode and grid points agree."""

from __future__ import annotations

import optuna
import pytest
from test_spec import write

from mnist_search.config import TrainConfig
from mnist_search.space import (
    Architecture,
    Choices,
    FieldParam,
    Penalty,
    Range,
    ShapeParam,
    Space,
    categorical,
)
from mnist_search.spec import load_spec

SPACE = Space((
    Architecture(Range(1, 3, integer=True), Range(8, 64, log=True, integer=True)),
    FieldParam("dropout", Range(0.0, 0.5)),
    Penalty(Choices(("none", "l1", "l2")), Range(1e-5, 1e-1, log=True)),
    FieldParam("momentum", Choices((0.0, 0.9))),
))


@pytest.mark.parametrize("params,expected", [
    ({"depth": 2, "width_1": 32, "width_2": 16, "dropout": 0.1, "penalty": "l1",
      "penalty_lambda": 0.01, "momentum": 0.9},
     {"hidden": (32, 16), "dropout": 0.1, "l1": 0.01, "l2": 0.0, "momentum": 0.9}),
    ({"depth": 1, "width_1": 64, "dropout": 0.0, "penalty": "none", "momentum": 0.0},
     {"hidden": (64,), "dropout": 0.0, "l1": 0.0, "l2": 0.0, "momentum": 0.0}),
    ({"depth": 3, "width_1": 8, "width_2": 9, "width_3": 10, "dropout": 0.5,
      "penalty": "l2", "penalty_lambda": 1e-5, "momentum": 0.0},
     {"hidden": (8, 9, 10), "dropout": 0.5, "l1": 0.0, "l2": 1e-5, "momentum": 0.0}),
])
def test_suggest_decode_and_encode_agree(params, expected):
    trial = optuna.trial.FixedTrial(params)
    assert SPACE.suggest(trial) == expected
    assert SPACE.decode(params) == expected
    assert SPACE.encode(TrainConfig(**expected)) == params


def test_encode_refuses_a_config_outside_the_space():
    with pytest.raises(ValueError, match="width_1 = 128 is outside the searched range"):
        SPACE.encode(TrainConfig(hidden=(128,)))
    with pytest.raises(ValueError, match="depth = 4"):
        SPACE.encode(TrainConfig(hidden=(8, 8, 8, 8)))
    with pytest.raises(ValueError, match="l1 and l2 both set"):
        SPACE.encode(TrainConfig(hidden=(8,), l1=0.1, l2=0.1))
    with pytest.raises(ValueError, match="momentum = 0.5 is not one of"):
        SPACE.encode(TrainConfig(hidden=(8,), momentum=0.5))


def test_grid_points_are_the_product_of_lists_without_lambda_for_none():
    space = Space((ShapeParam(((128, 64), (64,))),
                   Penalty(Choices(("none", "l1")), Choices((0.001, 0.01)))))
    assert space.grid() == [
        {"hidden": "128-64", "penalty": "none"},
        {"hidden": "128-64", "penalty": "l1", "penalty_lambda": 0.001},
        {"hidden": "128-64", "penalty": "l1", "penalty_lambda": 0.01},
        {"hidden": "64", "penalty": "none"},
        {"hidden": "64", "penalty": "l1", "penalty_lambda": 0.001},
        {"hidden": "64", "penalty": "l1", "penalty_lambda": 0.01},
    ]
    for point in space.grid():  # every grid point suggests back to its own config
        assert space.suggest(optuna.trial.FixedTrial(point)) == space.decode(point)


def test_a_penalty_grid_study_has_one_none_point_and_each_lambda(tmp_path):
    spec = load_spec(write(tmp_path, "[sampler]\nkind = 'grid'\n[search]\n"
                                     "penalty = ['none', 'l2']\npenalty_lambda = [0.1, 0.2]\n"))
    assert len(spec.search.grid()) == 3


def test_categorical_sorts_by_the_stored_value():
    shapes = categorical("hidden", [(64,), (128, 64), (64,)])
    assert isinstance(shapes, ShapeParam)
    assert shapes.domain.options == ("128-64", "64")  # as strings: the stored order
    assert categorical("momentum", [0.9, 0.0, 0.9]).grid() == [{"momentum": 0.0},
                                                              {"momentum": 0.9}]


def test_shipped_search_space_describes_itself():
    spec = load_spec("studies/search.toml")
    assert spec.search.keys == ("depth", "width", "dropout", "penalty", "penalty_lambda",
                                "momentum")
    assert spec.search.fields == {"hidden", "dropout", "l1", "l2", "momentum"}
    assert spec.search.describe()[0] == "depth [1, 4] x width [16, 512, log]"
