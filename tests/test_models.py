"""Trained models out of a study: safetensors artifacts, `model`, `evaluate`, `rerun`,
--keep-models, the dashboard's listing, and a full or read-only model folder."""

from __future__ import annotations

import hashlib
import json
import resource
import sqlite3
import subprocess
import urllib.request

import optuna
import pytest
import torch
from click.testing import CliRunner
from optuna.trial import TrialState
from test_concurrency import free_port

import mnist_search as ms
from mnist_search.cli import cli
from mnist_search.data import load_data
from mnist_search.training.engine import NUMERICS

from helpers import exe, read_only_bind, start_run, trials, wait_for, write_study

STUDY = """
trials = 6
[sampler]
kind = "random"
[fixed]
dataset = DATA
epochs = 2
optimizer = "adam"
[search]
momentum = { low = 0.0, high = 0.9 }
lr = { low = 0.001, high = 0.05, log = true }
[[reference]]
label = "base"
optimizer = "sgd"
lr = 0.01
momentum = 0.0
[[reference]]
label = "small"
hidden = [64]
optimizer = "adam"
lr = 0.005
momentum = 0.0
"""


def run(*args: str):
    return CliRunner().invoke(cli, list(args), obj={})


@pytest.fixture(scope="module")
def study_db(tmp_path_factory, synthetic_dir):
    tmp = tmp_path_factory.mktemp("models")
    spec = write_study(tmp / "m.toml", synthetic_dir, STUDY)
    url = f"sqlite:///{tmp / 'm.db'}"
    res = run("-q", "run", str(spec), "--storage", url, "--workers", "1")
    assert res.exit_code == 0, res.output
    return tmp, url


def test_every_complete_trial_has_its_own_safetensors_file(study_db):
    tmp, url = study_db
    done = [t for t in trials(url, "m") if t.state == TrialState.COMPLETE]
    stacked = [t for t in done if t.user_attrs["population_size"] > 1]
    assert len(done) == 6 and stacked  # stacked members included
    folder = tmp / "m.db.artifacts"
    files = sorted(p for p in folder.iterdir() if p.is_file())
    assert len(files) == 6 and not list(folder.rglob("*.tmp"))
    metas = [optuna.artifacts.get_all_artifact_meta(t, storage=optuna.storages.RDBStorage(url))
             for t in done]
    assert all(len(m) == 1 and m[0].filename.endswith(".safetensors") for m in metas)
    assert len({m[0].artifact_id for m in metas}) == 6
    blob = files[0].read_bytes()  # safetensors: a length, then a JSON header; no pickle
    header = json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])
    assert "__metadata__" in header and b"\x80\x04" not in blob[:2]


def test_model_then_evaluate_gives_the_recorded_accuracy(study_db, synthetic_dir):
    tmp, url = study_db
    out = tmp / "best.safetensors"
    res = run("model", "m", "--storage", url, "-o", str(out))
    assert res.exit_code == 0, res.output
    study = optuna.load_study(study_name="m", storage=url)
    best = study.best_trial
    res = run("evaluate", str(out))
    assert res.exit_code == 0, res.output
    shown = float(res.stdout.split("test accuracy ")[1].split("%")[0])
    assert round(shown, 4) == best.user_attrs["test_accuracy"]
    model = ms.load_model(out)  # the file alone rebuilds an nn.Module in eval mode
    assert not model.training
    data = load_data(str(synthetic_dir))
    images = data.test.x.view(-1, 1, 28, 28)
    with torch.no_grad():
        acc = 100 * float((model(images).argmax(1) == data.test.y).float().mean())
    assert acc == pytest.approx(best.user_attrs["test_accuracy"], abs=1.0)
    meta = ms.training.model_file.read_model_file(out)[1]
    config = json.loads(meta["config"])
    assert config == best.user_attrs["config"] and meta["study"] == "m"
    assert meta["trial"] == str(best.number) and meta["data_digest"] == \
        best.user_attrs["data_digest"]
    # a given trial; a stacked member, whose file is its own
    stacked = next(t for t in study.trials if t.user_attrs.get("population_size", 1) > 1)
    res = run("model", "m", "--storage", url, "--trial", str(stacked.number), "-o",
              str(tmp / "s.safetensors"))
    assert res.exit_code == 0
    res = run("evaluate", str(tmp / "s.safetensors"))
    assert f"test accuracy {stacked.user_attrs['test_accuracy']:.4f}%" in res.stdout


@pytest.mark.parametrize("which", ["alone", "stacked"])
def test_rerun_is_bit_identical(study_db, which):
    tmp, url = study_db
    study = optuna.load_study(study_name="m", storage=url)
    pick = (lambda t: t.user_attrs["population_size"] == 1) if which == "alone" else \
        (lambda t: t.user_attrs["population_size"] > 1)
    trial = next(t for t in study.trials if pick(t))
    res = run("rerun", "m", str(trial.number), "--storage", url, "-o", str(tmp / f"r-{which}.st"))
    assert res.exit_code == 0, res.output
    assert "weights bit-identical" in res.stdout
    assert (f"test accuracy {trial.user_attrs['test_accuracy']} -> "
            f"{trial.user_attrs['test_accuracy']}") in res.stdout
    # the verdict from the bytes: the re-trained file's digest against the recorded one
    from mnist_search.training.model_file import read_model_file

    _, _, state = read_model_file(tmp / f"r-{which}.st")
    digest = hashlib.sha256()  # as weights_digest is defined: names and bytes, sorted
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].contiguous().numpy().tobytes())
    assert digest.hexdigest()[:16] == trial.user_attrs["weights_digest"]
    _, outcome = ms.rerun_trial(study, trial.number)  # and from Python
    assert outcome.weights_digest() == trial.user_attrs["weights_digest"]


def test_rerun_says_what_differs_and_exits_1(study_db, tmp_path):
    tmp, url = study_db
    db = tmp_path / "copy.db"
    src = sqlite3.connect(tmp / "m.db")  # the database is in WAL mode: copy it properly
    con = sqlite3.connect(db)
    src.backup(con)
    src.close()
    con.execute("UPDATE trial_user_attributes SET value_json = '\"0000\"' "
                "WHERE key = 'weights_digest' AND trial_id = 1")
    con.execute("UPDATE trial_user_attributes SET value_json = '\"ffffffffffffffff\"' "
                "WHERE key = 'data_digest' AND trial_id = 1")
    con.execute("UPDATE trial_user_attributes SET value_json = '1' "
                "WHERE key = 'numerics' AND trial_id = 1")  # recorded by older arithmetic
    con.commit()
    con.close()
    res = run("rerun", "m", "0", "--storage", f"sqlite:///{db}")
    assert res.exit_code == 1
    line = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(line) == 1 and "did not repeat exactly" in line[0]
    assert "data_digest ffffffffffffffff ->" in line[0] and "weights differ" in res.stdout
    assert f"numerics 1 -> {NUMERICS}" in line[0]


@pytest.mark.parametrize("population", ["1", "16"])  # 16: members that end together
def test_keep_models_keeps_the_best_k(tmp_path, synthetic_dir, population):
    study_text = STUDY if population == "1" else \
        STUDY.replace("trials = 6", "trials = 10").replace('optimizer = "adam"', "")
    spec = write_study(tmp_path / "k.toml", synthetic_dir, study_text)
    url = f"sqlite:///{tmp_path / 'k.db'}"
    assert run("-q", "run", str(spec), "--storage", url, "--keep-models", "2",
               "--population", population).exit_code == 0
    study = optuna.load_study(study_name="k", storage=url)
    if population != "1":  # sampled trials stacked: several ended in one epoch
        assert max(t.user_attrs["population_size"] for t in study.trials) > 2
    best2 = sorted(study.trials, key=lambda t: -t.value)[:2]
    files = {p.name for p in (tmp_path / "k.db.artifacts").iterdir() if p.is_file()}
    store = optuna.storages.RDBStorage(url)
    kept = {optuna.artifacts.get_all_artifact_meta(t, storage=store)[0].artifact_id
            for t in best2}
    assert files == kept
    # each trial was ranked against those told before it: kept while among the best 2 then
    told = sorted(study.trials, key=lambda t: (t.datetime_complete, t.number))
    for i, t in enumerate(told):
        rank = sorted((-u.value, u.number) for u in told[:i + 1]).index((-t.value, t.number))
        assert ("model_error" in t.user_attrs) == (rank >= 2), (t.number, rank)
    if population != "1":
        return
    worst = min(study.trials, key=lambda t: t.value)
    res = run("model", "k", "--storage", url, "--trial", str(worst.number), "-o",
              str(tmp_path / "w.st"))
    assert res.exit_code == 2 and "--keep-models" in res.stderr


def test_postgresql_needs_a_model_folder_before_anything_is_touched(tmp_path, synthetic_dir):
    spec = write_study(tmp_path / "p.toml", synthetic_dir, STUDY)
    res = run("run", str(spec), "--storage", "postgresql+psycopg://u@127.0.0.1:1/nodb")
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "--artifacts DIR" in lines[0]


def test_dashboard_lists_and_serves_each_trials_model(study_db):
    tmp, url = study_db
    port = free_port()
    proc = subprocess.Popen([exe("mnist-search"), "dashboard", "--storage", url, "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def get(path):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return r.read()
            except OSError:
                return None

        study_id = optuna.load_study(study_name="m", storage=url)._study_id
        detail = json.loads(wait_for(lambda: get(f"/api/studies/{study_id}?after=0"), 60,
                                     "the dashboard API"))
        listed = [a for t in detail["trials"] for a in t.get("artifacts", [])]
        assert len(listed) == 6
        trial = detail["trials"][0]
        blob = get(f"/artifacts/{study_id}/{trial['trial_id']}/"
                   f"{trial['artifacts'][0]['artifact_id']}")
        assert blob is not None and blob[8:9] == b"{"  # a safetensors file, served whole
    finally:
        proc.terminate()
        proc.wait(timeout=30)


BIG = STUDY.replace("epochs = 2", "epochs = 1\nhidden = [1024, 512]")


def _no_half_files(folder):
    return not [p for p in folder.rglob("*") if p.is_file() and
                (p.suffix == ".tmp" or p.stat().st_size == 0)]


def test_a_full_model_folder_costs_models_not_results(tmp_path, synthetic_dir):
    spec = write_study(tmp_path / "f.toml", synthetic_dir, BIG)
    url = f"sqlite:///{tmp_path / 'f.db'}"
    limit = 4 * 1024 * 1024  # a 784-1024-512-10 model is 13 MB; the database stays far below

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = start_run(spec, url, "--workers", "1", preexec_fn=cap)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    done = trials(url, "f")
    assert len(done) == 6 and all(t.state == TrialState.COMPLETE for t in done)
    big = [t for t in done if t.user_attrs["config"]["hidden"] == [1024, 512]]
    assert len(big) == 5 and all("File too large" in t.user_attrs["model_error"] for t in big)
    small = next(t for t in done if t.user_attrs.get("label") == "small")
    assert "model_error" not in small.user_attrs  # a model that fits is still saved
    assert "model not saved" in err and "File too large" in err
    folder = tmp_path / "f.db.artifacts"
    assert len([p for p in folder.iterdir() if p.is_file()]) == 1 and _no_half_files(folder)


def test_a_read_only_model_folder_costs_models_not_results(tmp_path, synthetic_dir):
    spec = write_study(tmp_path / "r.toml", synthetic_dir, STUDY)
    folder = tmp_path / "ro"
    folder.mkdir()
    with read_only_bind(folder, folder):
        proc = start_run(spec, f"sqlite:///{tmp_path / 'r.db'}", "--workers", "1",
                         "--artifacts", str(folder))
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    done = trials(f"sqlite:///{tmp_path / 'r.db'}", "r")
    assert len(done) == 6 and all(t.state == TrialState.COMPLETE for t in done)
    assert all("Read-only file system" in t.user_attrs["model_error"] for t in done)
    assert "Read-only file system" in err and not list(folder.iterdir())


def test_objective_in_the_users_study_saves_models_too(tmp_path, synthetic_dir):
    spec = write_study(tmp_path / "u.toml", synthetic_dir, STUDY)
    study = optuna.create_study(direction="maximize")
    study.optimize(ms.Objective(spec, device="cpu", epochs=1, artifacts=tmp_path / "models",
                                keep_models=2), n_trials=4)
    files = [p for p in (tmp_path / "models").iterdir() if p.is_file()]
    assert len(files) == 2  # the best two survive; the others' files were pruned
    best = study.best_trial
    meta = optuna.artifacts.get_all_artifact_meta(best, storage=study._storage)
    out = tmp_path / "best.st"
    optuna.artifacts.download_artifact(artifact_store=optuna.artifacts.FileSystemArtifactStore(
        tmp_path / "models"), file_path=str(out), artifact_id=meta[0].artifact_id)
    assert ms.load_model(out).config == ms.TrainConfig(**best.user_attrs["config"])
