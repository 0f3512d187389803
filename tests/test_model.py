from __future__ import annotations

import pytest
import torch
from torch import nn

from mnist_search.config import TrainConfig
from mnist_search.training.mlp import (
    build_mlp,
    linear_layer,
    linear_layers,
    parameter_count,
)

NOTEBOOK_ARCHS = [(128, 64), (256, 128, 64, 32), (64,), (512, 256), (64, 32)]


@pytest.mark.parametrize("hidden", NOTEBOOK_ARCHS)
def test_every_notebook_architecture(hidden):
    model = build_mlp(hidden)
    out = model(torch.rand(3, 1, 28, 28))  # accepts image-shaped input like the notebook
    assert out.shape == (3, 10)
    widths = [(lin.in_features, lin.out_features) for lin in linear_layers(model)]
    full = [784, *hidden, 10]
    assert widths == list(zip(full, full[1:], strict=False))
    assert parameter_count(model) == parameter_count(hidden)


def test_parameter_count_of_baseline_matches_hand_count():
    assert parameter_count((128, 64)) == 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    assert TrainConfig(hidden=(128, 64)).architecture == "784-128-64-10"


def test_dropout_sits_after_first_hidden_relu_by_default():
    model = build_mlp((128, 64), dropout=0.5)
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Flatten", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Linear"]
    model_all = build_mlp((128, 64, 32), dropout=0.2, dropout_after="all")
    assert sum(isinstance(m, nn.Dropout) for m in model_all) == 3
    assert not any(isinstance(m, nn.Dropout) for m in build_mlp((128, 64)))


def test_linear_layer_is_one_based_like_fc2():
    model = build_mlp((128, 64))
    assert linear_layer(model, 2).in_features == 128 and linear_layer(model, 2).out_features == 64
    with pytest.raises(IndexError):
        linear_layer(model, 4)


def test_same_seed_gives_notebook_initial_weights():
    class MyNetwork(nn.Module):  # the notebook's class
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(784, 128), nn.Linear(128, 64)
            self.fc3 = nn.Linear(64, 10)

    torch.manual_seed(5)
    ref = MyNetwork()
    torch.manual_seed(5)
    ours = linear_layers(build_mlp((128, 64)))
    for a, b in zip([ref.fc1, ref.fc2, ref.fc3], ours, strict=True):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
