from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from mnist_search.config import ConfigError, TrainConfig
from mnist_search.data import load_data
from mnist_search.training.engine import DROPOUT_SEED_OFFSET
from mnist_search.training.mlp import build_mlp, linear_layer, linear_layers
from mnist_search.training.train import (
    NonFiniteLossError,
    StopTraining,
    train,
    train_population,
)


@pytest.fixture()
def synth(synthetic_dir):
    return load_data(str(synthetic_dir))


def cfg(synthetic_dir, **kw) -> TrainConfig:
    base = dict(dataset=str(synthetic_dir), device="cpu", epochs=2, batch_size=64)
    return TrainConfig(**{**base, **kw})


def reference_train(config: TrainConfig, data) -> nn.Module:
    """The notebook's loop with nn.Module, autograd and torch.optim.SGD, same seed and order."""
    return reference_run(config, data)[0]


def reference_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    """torch.optim's own optimizer for the config, every other setting at torch's default."""
    kw = dict(lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, momentum=config.momentum, **kw)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, momentum=config.momentum, **kw)
    return {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
            "nadam": torch.optim.NAdam}[config.optimizer](params, **kw)


def reference_run(config: TrainConfig, data) -> tuple[nn.Module, list[float], list[float]]:
    """reference_train, plus each epoch's mean batch loss and last batch loss.

    Dropout is written out as the engine defines it: after the first hidden ReLU (or every
    one, dropout_after = "all"), keep a unit where a uniform draw from the member's own
    stream (seed + DROPOUT_SEED_OFFSET) is >= p, and scale the kept ones by 1 / (1 - p).
    """
    torch.manual_seed(config.seed)
    model = build_mlp(config.hidden)
    opt = reference_optimizer(config, model.parameters())
    total = config.epochs * math.ceil(len(data.train) / config.batch_size)
    sched = {"constant": None,
             "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total),
             "onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(
                 opt, max_lr=config.lr, total_steps=total, cycle_momentum=False),
             }[config.schedule]
    scheduler = sched() if sched is not None else None
    criterion = nn.CrossEntropyLoss()
    target = linear_layer(model, config.penalty_layer)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    drop_gen = torch.Generator().manual_seed(config.seed + DROPOUT_SEED_OFFSET)

    def forward(x: torch.Tensor) -> torch.Tensor:
        h = x
        if config.input_dropout > 0:  # on the pixels, drawn before the hidden masks
            keep = torch.rand(h.shape, generator=drop_gen) >= config.input_dropout
            h = h * (keep.to(h.dtype) / (1.0 - config.input_dropout))
        for j, lin in enumerate(linears[:-1]):
            h = torch.relu(lin(h))
            if config.dropout > 0 and (config.dropout_after == "all" or j == 0):
                keep = torch.rand(h.shape, generator=drop_gen) >= config.dropout
                h = h * (keep.to(h.dtype) / (1.0 - config.dropout))
        return linears[-1](h)

    gen = torch.Generator().manual_seed(config.seed if config.order_seed is None
                                        else config.order_seed)
    n = len(data.train)
    for _ in range(config.order_skip):  # epochs of a shared order drawn before it joined
        torch.randperm(n, generator=gen)
    means, lasts = [], []
    for _ in range(config.epochs):
        perm = torch.randperm(n, generator=gen)
        losses = []
        for i in range(0, n, config.batch_size):
            idx = perm[i:i + config.batch_size]
            opt.zero_grad()
            loss = criterion(forward(data.train.x[idx]), data.train.y[idx])
            if config.l1:  # exactly the notebook's l1_regularization(): weight and bias
                loss = loss + config.l1 * sum(torch.sum(torch.abs(p)) for p in target.parameters())
            if config.l2:
                loss = loss + config.l2 * sum(torch.sum(p ** 2) for p in target.parameters())
            loss.backward()
            opt.step()
            if config.max_norm:  # each hidden unit's incoming weights, after the update
                with torch.no_grad():
                    for lin in linears[:-1]:
                        lin.weight.copy_(torch.renorm(lin.weight, 2, 0, config.max_norm))
            if scheduler is not None:  # stepped once per batch
                scheduler.step()
            losses.append(float(loss.detach()))
        means.append(sum(losses) / len(losses))
        lasts.append(losses[-1])
    return model, means, lasts


@pytest.mark.parametrize("kw", [
    dict(),
    dict(momentum=0.9),
    dict(l1=0.001, momentum=0.5),
    dict(l2=0.001),
    dict(l1=0.01, l2=0.01, penalty_layer=3, momentum=0.8),
    dict(hidden=(256, 128, 64, 32), momentum=0.9, lr=0.05),
    dict(hidden=(64,), batch_size=100),  # 512 % 100 != 0: a short last batch, as DataLoader
    dict(dropout=0.5, momentum=0.9),  # after the first hidden layer, as the notebook
    dict(hidden=(64, 32, 16), dropout=0.3, dropout_after="all", l2=0.01),
    dict(hidden=(64, 32, 16), dropout=0.2, dropout_after="first", penalty_layer=1, l1=0.001),
    dict(momentum=0.9, weight_decay=0.01),
    dict(momentum=0.9, schedule="cosine", lr=0.05),
    dict(optimizer="adam", lr=0.001),
    dict(optimizer="adam", lr=0.002, weight_decay=0.01, schedule="onecycle", l2=0.001),
    dict(optimizer="adamw", lr=0.001, weight_decay=0.05, schedule="cosine", dropout=0.2),
    dict(optimizer="rmsprop", lr=0.001),
    dict(optimizer="rmsprop", lr=0.0005, momentum=0.5, weight_decay=0.001, schedule="onecycle"),
    dict(input_dropout=0.2, momentum=0.9),  # the dropout paper's regularizers
    dict(input_dropout=0.2, dropout=0.5, dropout_after="all", max_norm=0.5, momentum=0.9,
         lr=0.1),
    dict(hidden=(64, 32), max_norm=0.3, optimizer="adam", lr=0.01),
    dict(optimizer="nadam", lr=0.002),  # the rule added through the one interface
    dict(optimizer="nadam", lr=0.001, weight_decay=0.01, schedule="cosine", momentum=0.5),
])
def test_weights_equal_plain_torch_loop(synthetic_dir, synth, kw):
    config = cfg(synthetic_dir, **kw)
    result = train(config, synth)
    model, means, lasts = reference_run(config, synth)
    ours = linear_layers(result.model())
    theirs = linear_layers(model)
    assert len(ours) == len(theirs) == len(config.hidden) + 1
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        for name in ("weight", "bias"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-4,
                                       atol=1e-5, msg=f"Linear {i + 1} {name}")
    # the per-epoch losses it reports are the loop's: mean over batches, and the last batch
    assert result.train_loss == pytest.approx(means, rel=1e-4)
    assert [e.last_batch_loss for e in result.epochs] == pytest.approx(lasts, rel=1e-4)
    # sparsity of the penalised layer, counted from its weights and bias
    layer = linear_layer(result.model(), config.penalty_layer)
    flat = torch.cat([layer.weight.detach().flatten(), layer.bias.detach().flatten()])
    assert result.zero_fraction == pytest.approx(float((flat == 0).float().mean()))
    assert result.small_fraction == pytest.approx(float((flat.abs() < 1e-3).float().mean()))


def test_same_seed_same_result_and_other_seed_differs(synthetic_dir, synth):
    a = train(cfg(synthetic_dir, dropout=0.3, momentum=0.9), synth)
    b = train(cfg(synthetic_dir, dropout=0.3, momentum=0.9), synth)
    c = train(cfg(synthetic_dir, dropout=0.3, momentum=0.9, seed=1), synth)
    assert a.train_loss == b.train_loss and a.test_accuracy == b.test_accuracy
    for key in a.state_dict:
        assert torch.equal(a.state_dict[key], b.state_dict[key])
    assert a.train_loss != c.train_loss


def test_learns_the_synthetic_task_and_reports_every_epoch(synthetic_dir, synth):
    seen = []
    result = train(cfg(synthetic_dir, momentum=0.9, lr=0.05, epochs=4), synth,
                   on_epoch=seen.append)
    assert [r.epoch for r in seen] == [1, 2, 3, 4]
    assert result.train_loss[-1] < result.train_loss[0]
    assert result.test_accuracy > 90.0
    assert result.parameter_count == 109_386
    model = result.model()
    fc2 = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][1]  # the penalised one
    flat = torch.cat([fc2.weight.detach().flatten(), fc2.bias.detach().flatten()])
    assert result.zero_fraction == pytest.approx(float((flat == 0).float().mean()))
    assert result.small_fraction == pytest.approx(float((flat.abs() < 1e-3).float().mean()))
    assert 0.0 < result.small_fraction < 0.5  # trained weights: a few near zero, most not
    logits = model(synth.test.x)
    acc = 100.0 * float((logits.argmax(1) == synth.test.y).float().mean())
    assert math.isclose(acc, result.test_accuracy, abs_tol=1e-3)


def test_accuracy_is_the_percentage_of_the_count_right(tmp_path):
    """9730 of 10,000 is stored as 97.3, not float32's 97.30000305175781: 30 test images,
    so that few counts are exact in float32."""
    from mnist_search.data.synthetic import write_synthetic

    root = write_synthetic(tmp_path / "d", n_train=512, n_test=30, seed=4)
    data = load_data(str(root))
    result = train(cfg(root, momentum=0.9, lr=0.005), data)  # too slow to get all 30
    right = int((result.model()(data.test.x).argmax(1) == data.test.y).sum())
    in_float32 = float(torch.tensor(100.0 * right, dtype=torch.float32) / 30)
    assert in_float32 != 100.0 * right / 30  # a count the test can tell apart
    assert result.test_accuracy == 100.0 * right / 30
    assert [e.test_accuracy for e in result.epochs][-1] == 100.0 * right / 30


def test_dropout_changes_training_and_is_reproducible(synthetic_dir, synth):
    plain = train(cfg(synthetic_dir), synth)
    dropped = train(cfg(synthetic_dir, dropout=0.5), synth)
    assert plain.train_loss != dropped.train_loss


def test_nonfinite_loss_raises_clear_error(synthetic_dir, synth):
    with pytest.raises(NonFiniteLossError, match="loss became"):
        train(cfg(synthetic_dir, lr=1e12, momentum=0.9, epochs=3), synth)


def test_callback_can_stop_training(synthetic_dir, synth):
    def stop(rep):
        raise StopTraining("pruned")

    with pytest.raises(StopTraining):
        train(cfg(synthetic_dir, epochs=3), synth, on_epoch=stop)


def test_validation_holdout_reports_val_accuracy(synthetic_dir):
    data = load_data(str(synthetic_dir), val_size=100)
    result = train(cfg(synthetic_dir, val_size=100), data)
    assert len(data.train) == 412 and len(data.val) == 100
    assert result.val_accuracy is not None and all(e.val_accuracy is not None
                                                   for e in result.epochs)


def assert_each_equals_its_own_run(configs, together, data) -> None:
    """Each stacked member: the weights and test accuracy of training its config alone."""
    for config, res in zip(configs, together, strict=True):
        alone = train(config, data)
        assert res.test_accuracy == pytest.approx(alone.test_accuracy, abs=1e-3)
        for key in alone.state_dict:
            torch.testing.assert_close(res.state_dict[key], alone.state_dict[key],
                                       rtol=1e-4, atol=1e-5, msg=key)


def test_population_members_match_single_runs(synthetic_dir, synth):
    configs = [cfg(synthetic_dir, momentum=m, seed=s, l1=l1, dropout=d)
               for m, s, l1, d in [(0.0, 0, 0.0, 0.0), (0.9, 1, 0.001, 0.0), (0.5, 2, 0.0, 0.5)]]
    together = train_population(configs, synth)
    assert_each_equals_its_own_run(configs, together, synth)


def test_population_drops_a_diverging_member_and_keeps_the_rest(synthetic_dir, synth):
    good, bad = cfg(synthetic_dir, epochs=3), cfg(synthetic_dir, epochs=3, lr=1e12, momentum=0.9)
    out = train_population([good, bad], synth)
    assert isinstance(out[1], NonFiniteLossError)
    assert len(out[0].epochs) == 3


@pytest.mark.parametrize("field,value", [
    ("dropout", 1.0), ("dropout", -0.1), ("momentum", 1.0), ("lr", 0.0), ("l1", -1.0),
    ("batch_size", 0), ("epochs", 0), ("hidden", ()), ("hidden", (64, 0)), ("penalty_layer", 4),
    ("device", "tpu"), ("dropout_after", "last"),
])
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})


def test_population_with_a_shared_order_matches_single_runs_of_that_order(synthetic_dir, synth):
    """The fused first-layer path: members share order_seed, each keeps its own init."""
    configs = [cfg(synthetic_dir, momentum=m, seed=s, l2=l2, dropout=d, order_seed=7)
               for m, s, l2, d in [(0.0, 0, 0.0, 0.0), (0.9, 1, 0.01, 0.0), (0.5, 2, 0.0, 0.3),
                                   (0.8, 3, 0.0, 0.0)]]
    together = train_population(configs, synth)
    assert_each_equals_its_own_run(configs, together, synth)


@pytest.mark.parametrize("momenta,kw", [
    ((0.0, 0.9, 0.5, 0.9, 0.2), dict(l2=0.01)),  # per-member momentum
    ((0.9,) * 5, dict(l1=0.01, penalty_layer=1)),  # one momentum: the GEMM's beta
    ((0.0,) * 5, dict()),  # no momentum: the buffer is just the gradient
    ((0.9,) * 2, dict(optimizer="adam", lr=0.001)),  # the rows left out get Adam's decay
])
def test_populations_leaving_out_blank_pixels_match_single_runs(tmp_path, momenta, kw):
    """Mostly blank border columns, as in MNIST: the first layer's rows follow a PixelOrder
    and each batch leaves out the rows past its last nonzero pixel (a different prefix each
    batch); each member must still equal its own run, and the torch loop's weights."""
    from mnist_search.data.synthetic import write_synthetic
    from mnist_search.training.pixels import PixelOrder

    root = write_synthetic(tmp_path / "blank", n_train=512, n_test=128, seed=3, margin=6)
    data = load_data(str(root))
    pixels = PixelOrder.of(data.train)
    assert pixels.pays(64)  # the path under test is taken
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(1))
    assert min(pixels.prefixes(order, 64)) < max(pixels.prefixes(order, 64)) < 784
    # each batch's prefix is exactly 1 + the last stored column nonzero in any of its images
    for b, rows in enumerate(pixels.prefixes(order, 64)):
        batch = pixels.x.index_select(0, order[b * 64:(b + 1) * 64])
        assert rows == int(batch.ne(0).any(0).nonzero().max()) + 1, b
    configs = [cfg(root, hidden=(256, 32), momentum=m, seed=s, dropout=d, order_seed=5, **kw)
               for m, s, d in zip(momenta, range(5), (0.0, 0.0, 0.3, 0.0, 0.0), strict=False)]
    together = train_population(configs, data)
    assert_each_equals_its_own_run(configs, together, data)
    alone = dataclasses.replace(configs[0], order_seed=None)
    model, _, _ = reference_run(alone, data)
    ours = linear_layers(train(alone, data).model())
    for a, b in zip(ours, linear_layers(model), strict=True):
        torch.testing.assert_close(a.weight, b.weight, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kw", [dict(input_dropout=0.2), dict(input_dropout=0.3, max_norm=0.4)])
def test_input_dropout_masks_follow_the_pixel_order(tmp_path, kw):
    """On data with blank margins the stored columns are in pixel order: a member's input
    mask, drawn over the pixels in their own order, must be reordered with them."""
    from mnist_search.data.synthetic import write_synthetic
    from mnist_search.training.pixels import PixelOrder

    root = write_synthetic(tmp_path / "blank", n_train=512, n_test=128, seed=4, margin=6)
    data = load_data(str(root))
    assert PixelOrder.of(data.train).pays(64)  # the path under test is taken
    config = cfg(root, hidden=(64, 32), momentum=0.9, **kw)
    model, means, _ = reference_run(config, data)
    result = train(config, data)
    for a, b in zip(linear_layers(result.model()), linear_layers(model), strict=True):
        torch.testing.assert_close(a.weight, b.weight, rtol=1e-4, atol=1e-5)
    assert result.train_loss == pytest.approx(means, rel=1e-4)


def test_pixel_order_is_per_split_and_refuses_another_split(tmp_path):
    from mnist_search.data.synthetic import write_synthetic
    from mnist_search.training.engine import Stack
    from mnist_search.training.pixels import PixelOrder

    root = write_synthetic(tmp_path / "blank", n_train=256, n_test=64, seed=3, margin=6)
    data = load_data(str(root))
    pixels = PixelOrder.of(data.train)
    assert PixelOrder.of(data.train) is pixels
    assert torch.equal(pixels.x, data.train.x[:, pixels.order])
    assert torch.equal(pixels.order[pixels.inverse], torch.arange(784))
    # each image's extent covers its last nonzero pixel and nothing past it is nonzero
    for i in range(0, 256, 37):
        k = int(pixels.extent[i])
        assert pixels.x[i, k - 1] != 0 and not pixels.x[i, k:].any()
    stack = Stack([cfg(root)], "cpu", 10, pixels)
    order = torch.randperm(64)
    with pytest.raises(ValueError, match="pixel order"):
        stack.run_epoch(data.test, [order], 64)


def test_shared_order_population_survives_dropping_members(synthetic_dir, synth):
    good = [cfg(synthetic_dir, seed=s, momentum=0.9, order_seed=1, epochs=3) for s in (0, 1)]
    bad = cfg(synthetic_dir, seed=2, lr=1e12, momentum=0.9, order_seed=1, epochs=3)
    out = train_population([good[0], bad, good[1]], synth)
    assert isinstance(out[1], NonFiniteLossError)
    assert_each_equals_its_own_run(good, [out[0], out[2]], synth)


@pytest.mark.parametrize("optimizer,schedule", [("adam", "cosine"), ("adamw", "onecycle"),
                                                ("rmsprop", "constant"), ("sgd", "onecycle"),
                                                ("nadam", "cosine")])
def test_optimizer_populations_match_single_runs_and_survive_drops(synthetic_dir, synth,
                                                                   optimizer, schedule):
    """Per-member lr, weight decay and momentum in one stack; a member that diverges drops
    out, and the optimizer state of the others follows them."""
    configs = [cfg(synthetic_dir, optimizer=optimizer, schedule=schedule, seed=s, lr=lr,
                   weight_decay=wd, momentum=m, order_seed=3, epochs=3)
               for s, lr, wd, m in [(0, 0.001, 0.0, 0.0), (1, 0.002, 0.01, 0.5),
                                    (2, 0.0005, 0.1, 0.9)]]
    bad = cfg(synthetic_dir, optimizer=optimizer, schedule=schedule, seed=9, lr=1e12,
              momentum=0.9, order_seed=3, epochs=3)
    out = train_population([configs[0], bad, *configs[1:]], synth)
    assert isinstance(out[1], NonFiniteLossError)
    assert_each_equals_its_own_run(configs, [out[0], *out[2:]], synth)
    for config, member in zip(configs, [out[0], *out[2:]], strict=True):  # and torch.optim's
        model, means, _ = reference_run(config, synth)
        for a, b in zip(linear_layers(member.model()), linear_layers(model), strict=True):
            torch.testing.assert_close(a.weight, b.weight, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(a.bias, b.bias, rtol=1e-4, atol=1e-5)
        assert member.train_loss == pytest.approx(means, rel=1e-4)


def test_optimizer_and_schedule_are_part_of_the_stack_key():
    assert TrainConfig(optimizer="adam").stack_key() != TrainConfig().stack_key()
    assert TrainConfig(schedule="cosine").stack_key() != TrainConfig().stack_key()
    assert TrainConfig(lr=0.1, weight_decay=0.1).stack_key() == TrainConfig().stack_key()


def test_stacked_members_with_input_dropout_and_max_norm_match_single_runs(synthetic_dir,
                                                                          synth):
    """Members differ in input dropout (0 included) and max-norm (none included) and share
    one batch order, the fused path's; each equals its own run alone."""
    configs = [cfg(synthetic_dir, seed=s, momentum=0.9, order_seed=3, input_dropout=p,
                   max_norm=c, dropout=0.5) for s, p, c in
               [(0, 0.0, 0.0), (1, 0.2, 0.5), (2, 0.4, 0.0), (3, 0.0, 0.3)]]
    together = train_population(configs, synth)
    assert_each_equals_its_own_run(configs, together, synth)


def test_every_rule_is_registered_once_under_a_name_a_study_may_give():
    from mnist_search.config import OPTIMIZERS
    from mnist_search.training.optim import RULES

    assert sorted(RULES) == sorted(OPTIMIZERS)
    assert all(RULES[name].name == name for name in RULES)


class _Stackish:
    """What graphable reads of a stack."""

    def __init__(self, device: str, input_dropout: bool = False, use_graphs: bool = True):
        self.device, self.input_dropout, self.use_graphs = device, input_dropout, use_graphs


def test_what_is_graphable():
    from mnist_search.training.graphs import graphable

    assert graphable(_Stackish("cuda")) and graphable(_Stackish("cuda:1"))
    assert not graphable(_Stackish("cpu")) and not graphable(_Stackish("mps"))
    assert not graphable(_Stackish("cuda", input_dropout=True))  # masks drawn in the step
    assert not graphable(_Stackish("cuda", use_graphs=False))


@pytest.mark.parametrize("optimizer,schedule", [("sgd", "constant"), ("sgd", "onecycle"),
                                                ("adam", "cosine"), ("adamw", "constant"),
                                                ("rmsprop", "onecycle"), ("nadam", "cosine")])
def test_a_step_reads_nothing_back_from_the_device(synthetic_dir, synth, optimizer, schedule,
                                                   monkeypatch):
    """Every number a step needs is on the device: a tensor's value read on the host
    inside a step (.item(), bool(), float(), .tolist()) would be a sync, and a frozen
    value in a CUDA graph. Checked on the CPU by making every such read fail."""
    from mnist_search.training.engine import Stack

    configs = [cfg(synthetic_dir, optimizer=optimizer, schedule=schedule, momentum=m,
                   weight_decay=w, lr=0.01, seed=s)
               for s, m, w in ((0, 0.0, 0.0), (1, 0.9, 0.01))]
    stack = Stack(configs, "cpu", total_steps=20)
    x, y = synth.train.x[:64], synth.train.y[:64].expand(2, -1)
    stack.step(x, y)  # the first step (lazy set-up, if any) may read freely

    def refuse(*_args, **_kwargs):
        raise AssertionError("a tensor's value was read on the host inside a step")

    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    for _ in range(3):
        stack.step(x, y)


def test_tf32_is_a_recorded_stack_key_and_the_backend_setting_is_restored(synthetic_dir):
    from mnist_search.training.engine import matmul_precision

    tf32 = cfg(synthetic_dir, matmul_precision="tf32")
    assert tf32.to_dict()["matmul_precision"] == "tf32"
    assert TrainConfig(**tf32.to_dict()) == tf32  # what rerun trains again
    assert tf32.stack_key() != cfg(synthetic_dir).stack_key()
    assert cfg(synthetic_dir).matmul_precision == "highest"  # off by default
    before = torch.backends.cuda.matmul.allow_tf32
    with matmul_precision(not before):
        assert torch.backends.cuda.matmul.allow_tf32 is (not before)
    assert torch.backends.cuda.matmul.allow_tf32 is before


# Every rule with each option that changes its update, against torch.optim: momentum on and
# off (SGD's weight decay must not wait for momentum), decay on and off, a constant and a
# changing (tensor) learning rate. Caught mutations: RMSprop's update with a tensor lr and no
# momentum; SGD's weight decay applied only when a member has momentum. Adam and AdamW take
# no momentum, and their decay and schedules are in the list above: in one epoch with no decay
# their update, about lr in size whatever the gradient, turns the rounding of a near-zero
# gradient (summed in another order on one thread than on two) into a difference of lr.
RULE_GRID = [dict(optimizer=o, momentum=m, weight_decay=wd, schedule=s,
                  lr=0.05 if o == "sgd" else 0.002)
             for o in ("sgd", "rmsprop", "nadam") for m in (0.0, 0.5)
             for wd in (0.0, 0.01) for s in ("constant", "cosine")]


@pytest.mark.parametrize("kw", RULE_GRID, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_each_rule_and_option_equals_torch_optim(synthetic_dir, synth, kw):
    config = cfg(synthetic_dir, epochs=1, **kw)
    ours = linear_layers(train(config, synth).model())
    theirs = linear_layers(reference_run(config, synth)[0])
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        for name in ("weight", "bias"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-4,
                                       atol=1e-5, msg=f"Linear {i + 1} {name}")


def test_a_stack_of_sgd_members_with_and_without_momentum_each_decays_as_alone(
        synthetic_dir, synth):
    """Weight decay in a stack where one member has momentum and the other has none."""
    configs = [cfg(synthetic_dir, weight_decay=0.01, momentum=m, seed=s, lr=0.05)
               for m, s in ((0.0, 0), (0.9, 1))]
    assert_each_equals_its_own_run(configs, train_population(configs, synth), synth)
