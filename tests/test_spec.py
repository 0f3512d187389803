from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mnist_search.cli import cli
from mnist_search.spec import SpecError, load_spec, reference_params

REPO = Path(__file__).resolve().parent.parent

STUDIES = sorted((REPO / "studies").glob("*.toml"))
NOTEBOOK_MOMENTUM = {0.0: 91.44, 0.2: 91.58, 0.4: 93.01, 0.6: 94.04, 0.8: 96.14, 0.9: 97.45}


def test_the_shipped_study_files_are_all_here():
    names = {p.stem for p in STUDIES}
    assert {"notebook", "regularization", "dropout", "architecture", "momentum",
            "search"} <= names


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_shipped_study_loads_and_its_references_fit_its_space(path):
    spec = load_spec(path)
    assert spec.description and spec.references
    params = reference_params(spec)
    assert len(params) == len(spec.references)
    for ref in spec.references:  # every reference builds a valid TrainConfig
        spec.base_config(**ref.values)


def test_notebook_study_is_the_notebooks_15_runs_in_order():
    spec = load_spec(REPO / "studies" / "notebook.toml")
    labels = [r.label for r in spec.references]
    assert labels == ["baseline", "l1-fc2", "l2-fc2", "dropout-0.5", "deep", "shallow", "wide",
                      "narrow", "momentum-0.9", "sweep-momentum-0.0", "sweep-momentum-0.2",
                      "sweep-momentum-0.4", "sweep-momentum-0.6", "sweep-momentum-0.8",
                      "sweep-momentum-0.9"]
    configs = {r.label: spec.base_config(**r.values) for r in spec.references}
    for c in configs.values():
        assert (c.lr, c.batch_size, c.epochs) == (0.01, 64, 5)
    assert configs["baseline"].hidden == (128, 64) and configs["baseline"].momentum == 0.0
    assert configs["l1-fc2"].l1 == 0.001 and configs["l1-fc2"].penalty_layer == 2
    assert configs["l2-fc2"].l2 == 0.001
    assert configs["dropout-0.5"].dropout == 0.5
    assert configs["dropout-0.5"].dropout_after == "first"
    assert configs["deep"].hidden == (256, 128, 64, 32)
    assert configs["shallow"].hidden == (64,)
    assert configs["wide"].hidden == (512, 256)
    assert configs["narrow"].hidden == (64, 32)
    assert configs["momentum-0.9"].momentum == 0.9
    sweep = {r.values["momentum"]: r.notebook_accuracy for r in spec.references
             if r.label.startswith("sweep")}
    assert sweep == NOTEBOOK_MOMENTUM
    # the baseline and the momentum-0.0 run have equal parameters: identity is the label
    params = reference_params(spec)
    assert params[0] == params[9]
    assert "fresh weights" in spec.description


BASE = """
description = "t"
[fixed]
epochs = 1
"""

BAD_SPECS = {
    "unknown top key": ("colour = 1\n", "unknown key colour"),
    "unknown fixed key": ("[fixed]\nwidht = 3\n", "unknown key fixed.widht"),
    "unknown search key": ("[search]\nlearning_rate = [0.1]\n",
                           "unknown key search.learning_rate"),
    "wrong type": ('[fixed]\nepochs = "five"\n', "fixed.epochs"),
    "low >= high": ("[search]\nlr = { low = 0.1, high = 0.01 }\n", "search.lr.low"),
    "log with low <= 0": ("[search]\nl2 = { low = 0.0, high = 0.1, log = true }\n",
                          "a value > 0 for a log range"),
    "dropout >= 1": ("[fixed]\ndropout = 1.0\n", "fixed.dropout = 1.0"),
    "dropout < 0 in a range": ("[search]\ndropout = { low = -0.1, high = 0.5 }\n",
                               "search.dropout.low = -0.1"),
    "negative lambda": ("[fixed]\nl1 = -0.001\n", "fixed.l1 = -0.001"),
    "negative penalty lambda": ("[search]\npenalty = ['l1']\n"
                                "penalty_lambda = { low = -1.0, high = 0.1 }\n",
                                "search.penalty_lambda.low"),
    "momentum >= 1": ("[search]\nmomentum = { low = 0.0, high = 1.0 }\n",
                      "search.momentum.high = 1.0"),
    "depth < 1": ("[search]\ndepth = { low = 0, high = 3 }\nwidth = { low = 8, high = 64 }\n",
                  "search.depth.low = 0"),
    "width < 1": ("[fixed]\nhidden = [128, 0]\n", "fixed.hidden"),
    "lr <= 0": ("[fixed]\nlr = 0.0\n", "fixed.lr = 0.0"),
    "batch size < 1": ("[search]\nbatch_size = [0, 64]\n", "search.batch_size[0] = 0"),
    "epochs < 1": ("[fixed]\nepochs = 0\n", "fixed.epochs = 0"),
    "empty grid": ("[sampler]\nkind = 'grid'\n[search]\nmomentum = []\n", "search.momentum"),
    "range in a grid": ("[sampler]\nkind = 'grid'\n[search]\n"
                        "momentum = { low = 0.0, high = 0.5 }\n", "needs grids"),
    "fixed and searched": ("[search]\nepochs = [1, 2]\n", "also set in [fixed]"),
    "unknown sampler": ("[sampler]\nkind = 'bayes'\n", "sampler.kind"),
    "unknown pruner": ("[pruner]\nkind = 'asha'\n", "pruner.kind"),
    "val objective without holdout": ("objective = 'val_accuracy'\n", "val_size"),
    "duplicate label": ("[[reference]]\nlabel = 'a'\n[[reference]]\nlabel = 'a'\n",
                        "used only once"),
    "reference outside range": ("[search]\nmomentum = { low = 0.5, high = 0.9 }\n"
                                "[[reference]]\nlabel = 'x'\nmomentum = 0.1\n",
                                "outside the searched range"),
    # what no machine here holds, refused up front with the bound
    "width 1e6": ("[fixed]\nhidden = [1000000]\n", "each an integer in [1, 16384]"),
    "width 1e9 searched": ("[search]\ndepth = { low = 1, high = 2 }\n"
                           "width = { low = 8, high = 1000000000 }\n",
                           "search.width.high = 1000000000"),
    "depth 1e6 searched": ("[search]\ndepth = { low = 1, high = 1000000 }\n"
                           "width = { low = 8, high = 64 }\n", "an integer in [1, 64]"),
    "too many parameters": ("[fixed]\nhidden = [16384, 16384]\n", "20,000,000 parameters"),
    "batch 1e12": ("[fixed]\nbatch_size = 1000000000000\n", "at most the training set"),
    "epochs 1e9": ("[fixed]\nepochs = 1000000000\n", "an integer in [1, 10000]"),
    "replicates 1e9": ("replicates = 1000000000\n", "an integer in [1, 1000]"),
    "trials 1e12": ("trials = 1000000000000\n", "an integer in [1, 1000000]"),
    # a grid, and references x replicates, are counted by multiplying, never enumerated
    "grid 1e9": ("[sampler]\nkind = 'grid'\n[search]\n" + "".join(
        f"{k} = [{', '.join(str(v / 1e4) for v in range(1, 1001))}]\n"
        for k in ("lr", "l2", "momentum")), "plans 1,000,000,000 trials up front"),
    "order_skip 1e12": ("[fixed]\norder_skip = 1000000000000\n", "[0, 100000]"),
    "order_seed 2^70": (f"[fixed]\norder_seed = {2**70}\n", "[0, 2**63)"),
    "lr over float32": ("[fixed]\nlr = 1e300\n", "float32 holds"),
    "l2 over float32 searched": ("[search]\nl2 = { low = 0.1, high = 1e300 }\n",
                                 "float32 holds"),
}


def test_grid_points_times_replicates_are_bounded_in_the_file_and_on_the_command_line(
        tmp_path):
    from mnist_search.errors import ConfigError
    from mnist_search.search.study import as_spec

    grid = ("[sampler]\nkind = 'grid'\n[search]\n"
            f"lr = [{', '.join(str(v / 1e4) for v in range(1, 102))}]\n")
    path = tmp_path / "g.toml"
    path.write_text("replicates = 1000\n" + BASE + grid)
    with pytest.raises(SpecError, match="plans 101,000 trials up front"):
        load_spec(path)
    path.write_text(BASE + grid)
    assert as_spec(path, replicates=990).replicates == 990  # 101 x 990 fits
    with pytest.raises(ConfigError, match="at most 990 for this study"):
        as_spec(path, replicates=991)


def write(tmp_path: Path, extra: str) -> Path:
    # Tables in `extra` that already exist in BASE are merged by putting them first.
    path = tmp_path / "bad.toml"
    if extra.startswith("[fixed]"):
        path.write_text('description = "t"\n' + extra)
    else:
        path.write_text(extra + BASE if not extra.startswith("[") else BASE + extra)
    return path


@pytest.mark.parametrize("case", list(BAD_SPECS))
def test_bad_spec_is_one_line_naming_file_key_and_value(tmp_path, case):
    text, expected = BAD_SPECS[case]
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert str(path) in message and expected in message and "\n" not in message


@pytest.mark.parametrize("case", ["malformed", "missing", "empty", "directory", "not utf-8"])
def test_unreadable_files(tmp_path, case):
    path = tmp_path / "s.toml"
    if case == "malformed":
        path.write_text("[fixed\nepochs = 1\n")
    elif case == "empty":
        path.write_text("  \n")
    elif case == "directory":
        path.mkdir()
    elif case == "not utf-8":
        path.write_bytes(b'description = "caf\xe9"\n')
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("case", list(BAD_SPECS)[:8] + ["missing"])
def test_cli_exits_2_and_creates_nothing(tmp_path, case):
    path = tmp_path / "missing.toml" if case == "missing" else write(tmp_path, BAD_SPECS[case][0])
    db = tmp_path / "s.db"
    res = CliRunner().invoke(cli, ["run", str(path), "--storage", f"sqlite:///{db}"], obj={})
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("mnist-search: error:")
    assert not db.exists()


def test_a_huge_value_is_shown_short():
    from mnist_search.config import TrainConfig
    from mnist_search.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        TrainConfig(hidden=tuple([8] * 100_000))
    assert len(str(err.value)) < 400 and "characters" in str(err.value)
