"""`report` on a tiny synthetic study: every figure is a real PNG and the report uses it."""

from __future__ import annotations

import json
import re
import struct

import pytest
from click.testing import CliRunner

from mnist_search.cli import cli
from mnist_search.stats import compare, summarize

from helpers import start_run, write_study

REPORT_STUDY = """
trials = 15
replicates = 2
[sampler]
kind = "tpe"
n_startup_trials = 3
[fixed]
dataset = DATA
epochs = 2
[search]
momentum = { low = 0.0, high = 0.99 }
lr = { low = 0.01, high = 0.1, log = true }
[[reference]]
label = "baseline"
group = "baseline"
notebook_accuracy = 60.0
notebook_loss = [1.0, 0.8]
[[reference]]
label = "l1"
group = "regularization"
l1 = 0.001
[[reference]]
label = "l2"
group = "regularization"
l2 = 0.01
[[reference]]
label = "wide"
group = "width"
hidden = [256, 128]
"""
EXPECTED = ["loss_curves.png", "accuracy_by_label.png", "momentum.png", "regularization.png",
            "capacity.png", "history.png", "importances.png", "slice.png", "contour.png"]


@pytest.fixture(scope="module")
def report_db(tmp_path_factory, synthetic_dir):
    tmp = tmp_path_factory.mktemp("report")
    spec = write_study(tmp / "rep.toml", synthetic_dir, REPORT_STUDY)
    url = f"sqlite:///{tmp / 'r.db'}"
    proc = start_run(spec, url, "--workers", "2")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return url


def png_size(path):
    blob = path.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    return struct.unpack(">II", blob[16:24])


@pytest.mark.parametrize("fmt", ["html", "md"])
def test_report_writes_every_figure_and_references_it(report_db, tmp_path, fmt):
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["report", "rep", "--storage", report_db, "-o", str(out),
                                   "--format", fmt], obj={})
    assert res.exit_code == 0, res.output
    report = (out / f"report.{fmt}").read_text()
    for name in EXPECTED:
        w, h = png_size(out / name)
        assert 300 <= w <= 4000 and 200 <= h <= 4000, (name, w, h)
        assert (out / name).stat().st_size > 5_000
        assert name in report
    if fmt == "html":  # self-contained: the images are embedded
        assert report.count("data:image/png;base64,") == len(list(out.glob("*.png")))
    # sentences come from the numbers: each caption names a measured percentage
    assert len(re.findall(r"\d+\.\d\d%", report)) >= 4
    assert "(n = 2)" in report  # the replicates were aggregated


def test_by_label_view_aggregates_replicates(report_db):
    res = CliRunner().invoke(cli, ["show", "rep", "--storage", report_db, "--by-label",
                                   "--format", "json"], obj={})
    import json

    out = json.loads(res.stdout)
    assert (out["study"], out["objective"], out["by"]) == ("rep", "test_accuracy", "label")
    rows = {r["label"]: r for r in out["configs"]}
    # the labels first, in the file's order; then each sampled config under its values
    assert list(rows)[:4] == ["baseline", "l1", "l2", "wide"]
    assert all(k.startswith("hidden=128-64 ") and "lr=" in k for k in list(rows)[4:])
    assert all(r["n"] == 2 and r["ci95"] is not None for r in rows.values())
    assert rows["baseline"]["notebook"] == 60.0


def test_report_of_a_study_with_failures_and_running_trials(report_db, tmp_path):
    import optuna

    study = optuna.load_study(study_name="rep", storage=report_db)
    study.ask()  # a RUNNING trial with nothing recorded yet
    t = study.ask()
    study.tell(t, state=optuna.trial.TrialState.FAIL)
    res = CliRunner().invoke(cli, ["report", "rep", "--storage", report_db, "-o",
                                   str(tmp_path / "o")], obj={})
    assert res.exit_code == 0, res.output
    assert "1 fail" in (tmp_path / "o" / "report.html").read_text()


def test_stats_interval_and_comparison():
    s = summarize([97.0, 97.2, 97.4])
    assert s.n == 3 and abs(s.mean - 97.2) < 1e-9 and abs(s.std - 0.2) < 1e-9
    assert abs(s.ci95 - 4.303 * 0.2 / 3 ** 0.5) < 1e-6
    assert summarize([91.0]).ci95 is None
    assert compare(summarize([97.0, 97.1, 97.2]), summarize([91.0, 91.1, 91.2])) == "clear"
    assert compare(summarize([97.0, 96.0, 98.0]), summarize([97.1, 96.1, 97.9])) == \
        "within noise"
    assert compare(summarize([97.0]), summarize([91.0])) == "untested"


def test_report_leaves_the_users_matplotlib_backend_and_style_alone(report_db, tmp_path):
    """A notebook user with their own backend and seaborn theme calls the report from Python:
    importing it and writing every figure (Optuna's ggplot-styled ones included) changes
    neither."""
    import os
    import subprocess
    import sys

    # a backend of the user's own (as a notebook's inline backend is: an Agg canvas)
    (tmp_path / "user_backend.py").write_text(
        "from matplotlib.backends.backend_agg import FigureCanvasAgg\n"
        "class FigureCanvas(FigureCanvasAgg):\n    pass\n")
    code = f"""
import matplotlib
matplotlib.use("module://user_backend")
import seaborn as sns
sns.set_theme(style="dark", context="talk", palette="pastel")
import matplotlib.pyplot as plt
before = dict(matplotlib.rcParams)
from mnist_search.results.report import write_report
from mnist_search.results.rows import load_study
from pathlib import Path
path = write_report(load_study("rep", {report_db!r}), Path({str(tmp_path / "o")!r}))
changed = sorted(k for k, v in matplotlib.rcParams.items() if before.get(k) != v)
print(matplotlib.get_backend(), len(plt.get_fignums()), changed, path.exists())
"""
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["module://user_backend", "0", "[]", "True"]
    assert (tmp_path / "o" / "history.png").exists()  # the Optuna figures were drawn too


def test_captions_say_the_numbers_of_the_trials(report_db, tmp_path):
    """A TPE study over two parameters: every Optuna figure the README promises is drawn,
    and the captions' numbers are the trials' own."""
    import optuna

    out = tmp_path / "md"
    res = CliRunner().invoke(cli, ["report", "rep", "--storage", report_db, "-o", str(out),
                                   "--format", "md"], obj={})
    assert res.exit_code == 0, res.output
    report = (out / "report.md").read_text()
    assert "skipped" not in report
    study = optuna.load_study(study_name="rep", storage=report_db)
    best = study.best_trial
    assert f"The highest single run, {best.value:.2f} (n = 1, one seed), came at trial " \
        f"{best.number} of {len(study.trials)};" in report
    by_label: dict[str, list[float]] = {}
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        if "label" in t.user_attrs:
            by_label.setdefault(t.user_attrs["label"].split("#")[0], []).append(
                t.user_attrs["test_accuracy"])
    means = {k: sum(v) / len(v) for k, v in by_label.items()}
    top = max(means, key=means.__getitem__)
    assert f"Highest mean: {top} at {means[top]:.2f}% [" in report
    rows = {r["label"]: r for r in json.loads(CliRunner().invoke(
        cli, ["show", "rep", "--storage", report_db, "--by-label", "--format", "json"],
        obj={}).stdout)["configs"]}
    assert all(rows[k]["mean"] == round(m, 2) for k, m in means.items())


def test_a_figure_that_fails_costs_only_itself(report_db, tmp_path, monkeypatch):
    import mnist_search.results.figures as figures

    def broken(*_args):
        raise KeyError("no such column")

    monkeypatch.setattr(figures, "momentum", broken)
    res = CliRunner().invoke(cli, ["report", "rep", "--storage", report_db, "-o",
                                   str(tmp_path / "o"), "--format", "md"], obj={})
    assert res.exit_code == 0, res.output
    report = (tmp_path / "o" / "report.md").read_text()
    assert "Figure skipped (Momentum vs accuracy: KeyError: 'no such column')." in report
    assert not (tmp_path / "o" / "momentum.png").exists()
    assert (tmp_path / "o" / "contour.png").exists() and "loss_curves.png" in report
    assert "figure 'Momentum vs accuracy' skipped" in res.stderr


def test_importances_say_how_many_trials_they_rest_on(report_db, tmp_path):
    import optuna

    out = tmp_path / "md"
    res = CliRunner().invoke(cli, ["report", "rep", "--storage", report_db, "-o", str(out),
                                   "--format", "md"], obj={})
    assert res.exit_code == 0, res.output
    study = optuna.load_study(study_name="rep", storage=report_db)
    n = len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    assert n < 20
    report = (out / "report.md").read_text()
    assert f"From {n} complete trials, the most important: " in report
    assert f"{n} trials are too few to rank parameters (fewer than 20)" in report


ONE_LABEL = """
trials = 5
[sampler]
kind = "random"
[fixed]
dataset = DATA
epochs = 1
[search]
momentum = { low = 0.0, high = 0.9 }
[[reference]]
label = "only"
momentum = 0.5
"""


def test_a_confirmed_search_with_one_label_says_so(tmp_path, synthetic_dir):
    """One label: its figures say there is nothing to compare. After `confirm`, the report
    shows the search's single runs beside their replicates, with the winner's curse."""
    import statistics

    import optuna

    spec = write_study(tmp_path / "one.toml", synthetic_dir, ONE_LABEL, name="one")
    url = f"sqlite:///{tmp_path / 'o.db'}"
    assert CliRunner().invoke(cli, ["-q", "run", str(spec), "--storage", url],
                              obj={}).exit_code == 0
    res = CliRunner().invoke(cli, ["confirm", "one", "--top", "2", "--seeds", "2",
                                   "--storage", url], obj={})
    assert res.exit_code == 0, res.output
    out = tmp_path / "md"
    res = CliRunner().invoke(cli, ["report", "one", "--storage", url, "-o", str(out),
                                   "--format", "md"], obj={})
    assert res.exit_code == 0, res.output
    report = (out / "report.md").read_text()
    assert "there is no other label to compare it with" in report
    assert "These are single runs" not in report  # nothing is compared, so no noise note
    assert "confirmed.png" in report and png_size(out / "confirmed.png")[0] >= 300
    study = optuna.load_study(study_name="one", storage=url)
    top = max(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)),
              key=lambda t: (t.value, -t.number))
    reps = [t.value for t in optuna.load_study(study_name="one-confirm", storage=url).trials
            if t.user_attrs["label"].split("#")[0] == f"trial-{top.number}"]
    mean = statistics.fmean(reps)
    assert (f"Trial {top.number}, the search's best, recorded {top.value:.2f} test_accuracy in "
            f"its single run; 2 fresh seeds give {mean:.2f}") in report
    assert f"a winner's curse of {top.value - mean:+.2f}." in report
