"""How a run ends, and what it refuses before it starts: the time budget, exit codes, checks
made before the storage is touched, samplers apart per worker, one holdout for all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from mnist_search import data as data_mod
from mnist_search.cli import cli
from mnist_search.data import FILES, load_data

from helpers import start_run, trials, write_study

LONG = """
trials = 6
[sampler]
kind = "random"
[fixed]
dataset = DATA
epochs = 400
[search]
lr = { low = 0.01, high = 0.1, log = true }
[[reference]]
label = "ref-a"
[[reference]]
label = "ref-b"
momentum = 0.5
"""


def run(*args: str):
    return CliRunner().invoke(cli, list(args), obj={})


def test_timeout_stops_running_trials_at_an_epoch_boundary(tmp_path, slow_synthetic_dir):
    spec = write_study(tmp_path / "long.toml", slow_synthetic_dir, LONG)
    url = f"sqlite:///{tmp_path / 'l.db'}"
    # 8 s: a loaded machine may take 3-4 s to start; 400 epochs take far longer than that
    proc = start_run(spec, url, "--workers", "1", "--timeout", "8")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err  # work is left undone
    assert "incomplete: stopped by --timeout" in out and "incomplete: stopped by" in err
    stopped = [t for t in trials(url, "long") if t.state == TrialState.FAIL]
    assert stopped and all(t.user_attrs["fail_reason"] == "timeout" for t in stopped)
    assert all(0 < len(t.intermediate_values) < 400 for t in stopped)
    assert not [t for t in trials(url, "long") if t.state == TrialState.RUNNING]
    # labelled ones are queued again by the next run, and each finishes once
    proc = start_run(spec, url, "--workers", "1", "--trials", "2")
    proc.communicate(timeout=600)
    assert proc.returncode == 0
    done = [t for t in trials(url, "long") if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["label"] for t in done) == ["ref-a", "ref-b"]


@pytest.mark.parametrize("body,fragment,code", [
    ('[fixed]\ndataset = "imagenet"\nepochs = 1\n', 'fixed.dataset = "imagenet"', 2),
    ("[fixed]\ndataset = DATA\nval_size = 512\nepochs = 1\n", "fixed.val_size = 512", 2),
    ("[sampler]\nkind = 'grid'\n[fixed]\ndataset = DATA\n[search]\nhidden = [[8], [8, 8]]\n"
     "penalty_layer = [1, 3]\n", "grid point 1", 2),
])
def test_run_refuses_before_touching_the_storage(tmp_path, synthetic_dir, body, fragment,
                                                 code):
    spec = write_study(tmp_path / "bad.toml", synthetic_dir, body)
    res = run("run", str(spec), "--storage", f"sqlite:///{tmp_path / 's.db'}")
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == code and len(lines) == 1 and fragment in lines[0], res.output
    assert not (tmp_path / "s.db").exists()


def test_missing_data_is_fetched_or_refused_in_one_line(tmp_path, tiny_pinned, monkeypatch):
    """Nothing under the data root: run tries the fetch chain (torchvision fails offline and
    the test dataset has no other source) and stops in one line, writing nothing."""
    name, _ = tiny_pinned
    monkeypatch.setitem(data_mod.DATASETS, name, data_mod.DATASETS[name].__class__(
        name, "TINY", data_mod.DATASETS[name].sha256, (), counts=(512, 128)))
    monkeypatch.setenv("MNIST_SEARCH_DATA", str(tmp_path / "empty"))
    spec = tmp_path / "s.toml"
    spec.write_text(f'description = "x"\n[fixed]\ndataset = "{name}"\nepochs = 1\n')
    res = run("run", str(spec), "--storage", f"sqlite:///{tmp_path / 's.db'}")
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and "INFO" not in ln]
    assert res.exit_code == 1 and len(lines) == 1, res.output
    assert "file is missing" in lines[0] and "fetching failed too" in lines[0]
    assert not (tmp_path / "s.db").exists()
    assert not any((tmp_path / "empty" / "TINY" / "raw" / f).exists() for f in FILES)


def test_check_validates_files_without_storage_or_torch(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[fixed]\nepochs = 0\n')
    code = ("import sys; from mnist_search.cli import main; sys.argv[0] = 'mnist-search'\n"
            "try:\n    main()\nfinally:\n"
            "    print(sorted(m for m in ('torch', 'optuna', 'sqlalchemy') if m in sys.modules),"
            " file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code, "check", "studies/notebook.toml",
                          str(bad), "studies/search.toml"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 2
    lines = out.stdout.splitlines()
    assert lines[0] == "studies/notebook.toml: ok: 15 references, 0 search parameters, " \
        "0 grid points, sampler grid"
    assert lines[1].startswith(f"error: {bad}: fixed.epochs = 0 is not allowed")
    assert lines[2] == "studies/search.toml: ok: 2 references, 4 search parameters, " \
        "sampler tpe"
    assert out.stderr.strip().splitlines()[-1] == "[]"  # no torch, optuna or sqlalchemy


def test_internal_errors_are_one_line_unless_debug(tmp_path, monkeypatch):
    import mnist_search.results.rows as rows

    def boom(*_a, **_k):
        raise TypeError("something nobody foresaw")

    monkeypatch.setattr(rows, "load_study", boom)
    res = run("show", "x", "--storage", f"sqlite:///{tmp_path / 's.db'}")
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 1 and len(lines) == 1 and "Traceback" not in res.output
    assert "internal error: TypeError: something nobody foresaw" in lines[0]
    assert "--debug" in lines[0]
    res = run("--debug", "show", "x", "--storage", f"sqlite:///{tmp_path / 's.db'}")
    assert isinstance(res.exception, TypeError)


SEARCH = """
trials = 12
objective = "val_accuracy"
[sampler]
kind = "random"
[fixed]
dataset = DATA
epochs = 1
val_size = 100
[search]
momentum = { low = 0.0, high = 0.95 }
lr = { low = 0.001, high = 0.1, log = true }
"""


def test_parallel_workers_sample_apart_share_one_holdout_and_select_on_val(tmp_path,
                                                                          synthetic_dir):
    spec = write_study(tmp_path / "par.toml", synthetic_dir, SEARCH)
    url = f"sqlite:///{tmp_path / 'p.db'}"
    assert run("-q", "run", str(spec), "--storage", url, "--workers", "2",
               "--population", "1").exit_code == 0
    assert run("-q", "run", str(spec), "--storage", url, "--workers", "2",
               "--trials", "20").exit_code == 0  # resumed: the samplers start elsewhere
    done = trials(url, "par")
    assert len(done) == 20 and len({t.user_attrs["worker"] for t in done}) >= 3
    points = [json.dumps(t.params, sort_keys=True) for t in done]
    assert len(set(points)) == len(points)  # no worker, run or resume replays a point
    holdout = load_data(str(synthetic_dir), val_size=100).holdout_digest
    assert holdout is not None and {t.user_attrs["holdout_digest"] for t in done} == {holdout}
    for t in done:  # selected on the holdout, never on test
        assert t.value == t.user_attrs["val_accuracy"]


def test_stacked_trials_record_their_stacks_time_and_size(tmp_path, synthetic_dir):
    spec = write_study(tmp_path / "st.toml", synthetic_dir, """
[sampler]
kind = "grid"
[fixed]
dataset = DATA
epochs = 1
[search]
momentum = [0.0, 0.3, 0.6, 0.9]
""")
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert run("-q", "run", str(spec), "--storage", url).exit_code == 0
    attrs = [t.user_attrs for t in trials(url, "st")]
    assert {a["population_size"] for a in attrs} == {4}
    assert len({a["stack_seconds"] for a in attrs}) == 1  # one stack, one wall time
    for a in attrs:
        assert a["member_seconds"] == pytest.approx(a["stack_seconds"] / 4, abs=1e-3)
        assert "train_seconds" not in a
    res = run("show", "st", "--storage", url, "--format", "json")
    assert {r["population_size"] for r in json.loads(res.stdout)} == {4}


def test_reap_accepts_zero_and_prints_no_optuna_warnings(tmp_path, synthetic_dir):
    import optuna

    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="r", storage=url)
    study.ask()  # RUNNING, no heartbeat: only an age can reap it
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    out = subprocess.run([str(Path(sys.executable).with_name("mnist-search")), "reap", "r",
                          "--storage", url, "--older-than", "0"], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "failed 1 stale trials [0]" in out.stdout
    assert "Warning" not in out.stderr
    assert trials(url, "r")[0].state == TrialState.FAIL


def test_reap_waits_for_the_study_lock_that_claims_hold(tmp_path):
    """A reap and a run's claim both fail stale trials and enqueue their labels again: under
    one lock, so no label is enqueued twice. A reap started while a claim holds it waits."""
    import threading

    import optuna

    from mnist_search.search.reap import reap
    from mnist_search.storage.lock import study_lock

    url = f"sqlite:///{tmp_path / 'l.db'}"
    optuna.create_study(study_name="r", storage=url).ask()
    reports: list[object] = []
    with study_lock(url, "r"):  # as a claim holds it
        reaper = threading.Thread(target=lambda: reports.append(reap("r", url, 0)))
        reaper.start()
        reaper.join(timeout=1.5)
        assert reaper.is_alive() and not reports  # waiting, nothing failed yet
        assert trials(url, "r")[0].state == TrialState.RUNNING
    reaper.join(timeout=60)
    assert len(reports) == 1 and trials(url, "r")[0].state == TrialState.FAIL


SMALL = """
[sampler]
kind = "grid"
[fixed]
dataset = DATA
epochs = 1
hidden = [8]
[[reference]]
label = "a"
[[reference]]
label = "b"
momentum = 0.5
"""


def test_a_finished_study_starts_no_worker_and_says_nothing_to_run(tmp_path, synthetic_dir,
                                                                    monkeypatch):
    from mnist_search.workers import spawn

    spec = write_study(tmp_path / "f.toml", synthetic_dir, SMALL)
    url = f"sqlite:///{tmp_path / 'f.db'}"
    assert run("-q", "run", str(spec), "--storage", url).exit_code == 0
    started = []
    real = spawn.Pool.__init__

    def counting(self, *args, **kwargs):
        started.append(args)
        real(self, *args, **kwargs)

    monkeypatch.setattr(spawn.Pool, "__init__", counting)
    for extra in ([], ["--trials", "1"]):
        res = run("run", str(spec), "--storage", url, "--workers", "2", *extra)
        assert res.exit_code == 0, res.output
        asked = extra[1] if extra else "2"
        assert f"f: nothing to run: 2 trials finished, {asked} asked for" in res.stdout
        assert "2/1" not in res.stdout
    assert started == []


def test_worker_counts_are_bounded_and_warned_before_any_worker_starts(tmp_path, synthetic_dir,
                                                                        monkeypatch):
    from mnist_search.workers import spawn

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    spec = write_study(tmp_path / "w.toml", synthetic_dir, SMALL)
    started = []
    monkeypatch.setattr(spawn.Pool, "__init__", lambda self, *a, **k: started.append(a))
    res = run("run", str(spec), "--workers", "17", "--storage", "notaurl")
    assert res.exit_code == 2 and "[1, 16]" in res.stderr and started == []
    res = run("run", str(spec), "--workers", "2", "--storage", "notaurl")
    assert res.exit_code == 2 and "is not a URL" in res.stderr and started == []
    monkeypatch.undo()
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    url = f"sqlite:///{tmp_path / 'w.db'}"
    res = run("run", str(spec), "--workers", "3", "--storage", url)
    assert res.exit_code == 0, res.output
    assert res.stderr.count("3 workers on 2 cores") == 1


@pytest.mark.parametrize("argv", [
    ["train", "--dataset", "NOWHERE", "--epochs", "1"],
    ["train", "--dataset", "EMPTY", "--epochs", "1"],
    ["run", "STUDY", "--storage", "sqlite:///NOWHERE/s.db"],
    ["data", "fetch", "--root", "NOWHERE/deeper"],
])
def test_bad_input_exits_2_from_every_command(tmp_path, synthetic_dir, argv):
    (tmp_path / "empty").mkdir()
    spec = write_study(tmp_path / "s.toml", synthetic_dir, SMALL)
    args = [a.replace("NOWHERE", str(tmp_path / "nowhere")).replace(
        "EMPTY", str(tmp_path / "empty")).replace("STUDY", str(spec)) for a in argv]
    res = run(*args)
    assert res.exit_code == 2, res.output
    assert len(res.stderr.splitlines()) == 1 and "Traceback" not in res.stderr
    assert not (tmp_path / "nowhere").exists()
