"""The engine's parts on their own: the flat layout's views line up with what was
flattened, and keeping members keeps exactly their blocks."""

from __future__ import annotations

import torch

from mnist_search.training.layout import Layout, layer_shapes


def _layers(n: int, shapes: list[tuple[int, int]]
            ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(n, out, inp, generator=g) for out, inp in shapes]
    biases = [torch.randn(n, 1, out, generator=g) for out, _ in shapes]
    return weights, biases


def test_views_give_back_what_was_flattened():
    shapes = layer_shapes([7, 5])
    layout = Layout(tuple(shapes), "cpu")
    weights, biases = _layers(3, shapes)
    flat = layout.flatten(weights, biases)
    assert flat.numel() == sum(t.numel() for t in weights + biases)
    views = layout.views(flat, 3)
    for got, want in zip(views, weights + biases, strict=True):
        assert torch.equal(got, want)
    # the first layer is stored a row per pixel: row i holds every member's weights from pixel i
    rows = layout.first_rows(flat, 3)
    assert rows.shape == (784, 3 * 7)
    assert torch.equal(rows[10].view(3, 7), weights[0][:, :, 10])


def test_select_keeps_exactly_the_chosen_members():
    shapes = layer_shapes([4])
    layout = Layout(tuple(shapes), "cpu")
    weights, biases = _layers(4, shapes)
    kept = layout.select(layout.flatten(weights, biases), 4, torch.tensor([3, 1]))
    for got, want in zip(layout.views(kept, 2), weights + biases, strict=True):
        assert torch.equal(got, want[[3, 1]])


def test_per_member_values_cover_each_members_block():
    layout = Layout(tuple(layer_shapes([2])), "cpu")
    views = layout.views(layout.per_member([0.5, -2.0]), 2)
    for v in views:
        assert bool((v[0] == 0.5).all()) and bool((v[1] == -2.0).all())
    assert layout.value([0.1, 0.1]) == 0.1
