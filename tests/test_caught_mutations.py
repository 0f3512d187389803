"""Behaviours a small change to the code used to break without any test noticing: each test
here fails on the change its docstring names and passes on the code as it is."""

from __future__ import annotations

import logging

import optuna
import pytest
import torch
from optuna.trial import TrialState

from mnist_search.bundled import resolve_study
from mnist_search.config import TrainConfig
from mnist_search.data import load_data
from mnist_search.errors import SpecError
from mnist_search.search.confirm import confirm_study_name
from mnist_search.search.study import open_study
from mnist_search.search.warm_start import enqueue_warm_start
from mnist_search.spec import load_spec
from mnist_search.training import engine
from mnist_search.training.train import StopTraining, train, train_population
from mnist_search.workers.confirm import confirm

from helpers import write_study


def cfg(root, **kw) -> TrainConfig:
    return TrainConfig(**{**dict(dataset=str(root), device="cpu", epochs=2), **kw})


def test_a_lone_padded_member_is_scored_at_its_own_widths(synthetic_dir, monkeypatch):
    """(scoring a lone padded member in its padded stack, not at its own widths.) Its
    recorded accuracy must be what its saved model scores: the model's own shapes."""
    scored: list[list[tuple[int, int]]] = []
    original = engine.Stack.accuracy

    def accuracy(self, split):
        scored.append(list(self.shapes))
        return original(self, split)

    monkeypatch.setattr(engine.Stack, "accuracy", accuracy)
    config = cfg(synthetic_dir, hidden=(24, 8), pad_hidden=(32, 16), epochs=1)
    [result] = train_population([config], load_data(str(synthetic_dir)))
    assert not isinstance(result, BaseException)
    own = [(24, 784), (8, 24), (10, 8)]
    assert scored and scored[-1] == own  # the final score, at the member's own widths


def test_input_dropout_follows_each_member_after_another_drops(synthetic_dir):
    """(the input-dropout generator picked by position: after member 0 leaves, member 1
    would draw from member 0's stream.) A member that stays trains as it does alone."""
    configs = [cfg(synthetic_dir, hidden=(16,), input_dropout=0.3, seed=s) for s in (1, 2)]

    def stop_first(member: int, report) -> None:
        if member == 0 and report.epoch == 1:
            raise StopTraining()

    data = load_data(str(synthetic_dir))
    outcomes = train_population(configs, data, stop_first)
    assert isinstance(outcomes[0], StopTraining)
    alone = train(configs[1], data)
    for key, value in alone.state_dict.items():  # rounding of another GEMM shape only
        assert torch.allclose(outcomes[1].state_dict[key], value, atol=1e-4), key


def test_a_study_path_in_another_folder_never_falls_back_to_the_bundled_one(tmp_path,
                                                                          monkeypatch):
    """(sub/notebook resolved to the bundled notebook study.) A path names a file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    with pytest.raises(SpecError, match="no such study file"):
        resolve_study("sub/notebook")
    assert resolve_study("notebook").name == "notebook.toml"  # a bare name: the bundled


def test_a_local_file_that_shadows_a_bundled_study_says_so(tmp_path, monkeypatch, caplog):
    """(no notice when ./notebook.toml is used instead of the bundled study.)"""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notebook.toml").write_text('description = "mine"\n')
    caplog.set_level(logging.INFO, logger="mnist_search")
    for name in ("notebook", "notebook.toml"):
        caplog.clear()
        assert resolve_study(name).resolve() == (tmp_path / "notebook.toml").resolve()
        assert "bundled study" in caplog.text, name


TIMED = """
trials = 2
[sampler]
kind = "random"
[constraints]
max_train_seconds = 0.0001
[fixed]
dataset = DATA
epochs = 1
hidden = [8]
[search]
momentum = { low = 0.0, high = 0.9 }
"""


def test_max_train_seconds_is_recorded_as_a_constraint(tmp_path, synthetic_dir):
    """(the train_seconds constraint never recorded.) Every trial is over a 0.1 ms cap by
    its own training time."""
    import mnist_search as ms

    spec = load_spec(write_study(tmp_path / "t.toml", synthetic_dir, TIMED, name="t"))
    url = f"sqlite:///{tmp_path / 't.db'}"
    ms.run_study(spec, storage=url, progress=False)
    done = [t for t in optuna.load_study(study_name="t", storage=url).trials
            if t.state == TrialState.COMPLETE]
    assert len(done) == 2
    for t in done:
        expected = t.user_attrs["member_seconds"] - 0.0001
        assert t.constraints == pytest.approx({"train_seconds": expected}, abs=1e-3)


def _source(url: str, direction: str, values: list[float]) -> None:
    """A finished study `src` whose trials hold a config and these values."""
    study = optuna.create_study(study_name="src", storage=url, direction=direction)
    dist = {"momentum": optuna.distributions.FloatDistribution(0.0, 0.9)}
    for i, value in enumerate(values):
        momentum = round(0.1 * i, 2)
        study.add_trial(optuna.trial.create_trial(
            params={"momentum": momentum}, distributions=dist, value=value,
            user_attrs={"config": TrainConfig(momentum=momentum).to_dict()}))


WARM = """
[sampler]
kind = "random"
[fixed]
epochs = 1
[search]
momentum = { low = 0.0, high = 0.9 }
"""


def test_a_warm_start_from_a_minimizing_study_takes_its_lowest_values(tmp_path,
                                                                     synthetic_dir):
    """(the source ranked as if it maximized.)"""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    _source(url, "minimize", [5.0, 1.0, 9.0, 2.0])
    spec = load_spec(write_study(tmp_path / "w.toml", synthetic_dir, WARM, name="w"))
    study = open_study(spec, url)
    assert enqueue_warm_start(study, spec, url, "src:2") == 2
    origins = [t.user_attrs["warm_start"] for t in study.get_trials()]
    assert origins == ["src#1", "src#3"]  # values 1.0 and 2.0, best first


def test_a_failed_warm_start_trial_is_enqueued_again(tmp_path, synthetic_dir):
    """(failed warm-start trials never re-enqueued.) A later run tries it again; one that
    is waiting, running or done is never enqueued twice."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    _source(url, "maximize", [5.0, 1.0])
    spec = load_spec(write_study(tmp_path / "w.toml", synthetic_dir, WARM, name="w"))
    study = open_study(spec, url)
    assert enqueue_warm_start(study, spec, url, "src:1") == 1
    assert enqueue_warm_start(study, spec, url, "src:1") == 0  # waiting: not again
    trial = study.ask()  # it ran, and failed
    study.tell(trial, state=TrialState.FAIL)
    assert enqueue_warm_start(study, spec, url, "src:1") == 1
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.WAITING]


CONFIRMED = TIMED.replace("[constraints]\nmax_train_seconds = 0.0001\n", "")


def test_confirm_fails_what_a_killed_confirm_left_running(tmp_path, synthetic_dir):
    """(the RUNNING replicates of a killed confirm never failed.) The next confirm fails
    them (`interrupted`) and trains their seeds again."""
    import mnist_search as ms

    spec = load_spec(write_study(tmp_path / "c.toml", synthetic_dir, CONFIRMED, name="c"))
    url = f"sqlite:///{tmp_path / 'c.db'}"
    ms.run_study(spec, storage=url, progress=False)
    study = optuna.load_study(study_name="c", storage=url)
    confirm(study, top=1, seeds=1, device="cpu", progress=False)
    store = optuna.load_study(study_name=confirm_study_name("c"), storage=url)
    left = store.ask()  # a replicate whose confirm was killed while it trained
    left.set_user_attr("confirms", study.best_trial.number)
    left.set_user_attr("replicate", 1)
    report = confirm(study, top=1, seeds=2, device="cpu", progress=False)
    assert len(report.configs[0].values) == 2
    trials = store.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    [failed] = [t for t in trials if t.state == TrialState.FAIL]
    assert failed.number == left.number and failed.user_attrs["fail_reason"] == "interrupted"
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 2




def test_confirm_of_several_objectives_takes_the_pareto_front(tmp_path, synthetic_dir):
    """(the Pareto front ignored: the runner-up by the first objective taken although
    another trial dominates it.)"""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    study = optuna.create_study(study_name="p", storage=url,
                                directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["test_accuracy", "parameters"])
    config = cfg(synthetic_dir, hidden=(8,), epochs=1).to_dict()
    for values in ([95.0, 100.0], [94.0, 200.0], [90.0, 10.0]):  # the 2nd is dominated
        study.add_trial(optuna.trial.create_trial(values=values,
                                                  user_attrs={"config": config}))
    report = confirm(study, top=2, seeds=1, device="cpu", progress=False)
    assert [c.trial for c in report.configs] == [0, 2]


def test_an_output_path_that_is_a_folder_is_refused_even_with_force(tmp_path):
    """check_output accepting a folder: `-o results/` would have replaced a folder."""
    from mnist_search.errors import UsageError
    from mnist_search.files import check_output

    for force in (False, True):
        with pytest.raises(UsageError, match="is a folder"):
            check_output(tmp_path, force=force)
    assert tmp_path.is_dir()


def test_an_sslpassword_in_the_query_is_redacted():
    """Redaction missing `sslpassword` (a client key's passphrase) in a URL's query."""
    from mnist_search.errors import redact

    url = "postgresql+psycopg://me@db.example/s?sslpassword=Kx9-secret-pass&sslmode=require"
    shown = redact(f"cannot reach {url}")
    assert "Kx9-secret-pass" not in shown and "sslmode=require" in shown


def test_the_logging_filter_redacts_a_records_arguments():
    """RedactingFilter leaving a record as it was: a password passed as a %s argument."""
    from mnist_search.errors import RedactingFilter

    record = logging.LogRecord("mnist_search", logging.INFO, __file__, 1, "opening %s",
                               ("postgresql://me:Zq7-hunter2@db/s",), None)
    assert RedactingFilter().filter(record)
    assert "Zq7-hunter2" not in record.getMessage() and "opening" in record.getMessage()


def test_64_layers_are_allowed_and_65_refused_for_hidden_and_its_padding():
    """The depth limit applied below MAX_DEPTH, and `pad_hidden` without bounds."""
    from mnist_search.config import MAX_DEPTH, MAX_WIDTH, ConfigError

    assert MAX_DEPTH == 64
    assert len(TrainConfig(hidden=(8,) * 64, pad_hidden=(8,) * 64).hidden) == 64
    with pytest.raises(ConfigError, match="hidden"):
        TrainConfig(hidden=(8,) * 65)
    for pad in ((8,) * 65, (MAX_WIDTH + 1,), (0,), (8.5,)):
        with pytest.raises(ConfigError, match="pad_hidden"):
            TrainConfig(hidden=(8,), pad_hidden=pad)


def test_progress_lines_and_figure_captions_escape_their_html():
    """A study name or label with `<script>` shown in a notebook cell as markup."""
    from mnist_search.live import Line
    from mnist_search.results.display import FigureView

    bad = "<script>alert('x')</script>"
    assert "<script>" not in Line(f"study {bad}: 3/10")._repr_html_()
    html = FigureView(f"label {bad}", f"text {bad}", b"\x89PNG")._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_the_summary_follows_the_study_files_label_order_not_the_trials():
    """The summary ignoring the study file's label order: rows in trial (or name) order."""
    from mnist_search.search.summary import answer, finished_trials, label_table

    study = optuna.create_study(direction="maximize", study_name="order")
    study.set_user_attr("references", {"zeta": {}, "mid": {}, "alpha": {}})
    for number, label in enumerate(["alpha", "mid", "zeta", "alpha#2"]):
        config = {"hidden": [128, 64], "lr": 0.01 + number}
        study.add_trial(optuna.trial.create_trial(
            value=90.0 + number, user_attrs={"label": label, "config": config,
                                             "test_accuracy": 90.0 + number}))
    assert [c.name for c in answer(study, by="label").configs] == ["zeta", "mid", "alpha"]
    rows = label_table(finished_trials(study), ["zeta", "mid", "alpha"])
    assert [r["label"] for r in rows] == ["zeta", "mid", "alpha"]


def test_a_confirm_report_takes_only_the_picked_trials_own_replicates():
    """confirm reusing another trial's stored replicates: trial 7's report must not show
    trial 3's (nor count a missing replicate of 7 as found)."""
    import math

    from mnist_search.search.confirm import confirmed

    study = optuna.create_study(direction="maximize", study_name="src")
    study.set_user_attr("objective", "test_accuracy")
    for n in range(8):
        study.add_trial(optuna.trial.create_trial(
            value=80.0 + n, user_attrs={"config": {"lr": 0.01 * (n + 1)}}))
    store = optuna.create_study(direction="maximize", study_name="src-confirm")
    for label, value in (("trial-3", 10.0), ("trial-3#2", 11.0), ("trial-7", 90.0)):
        store.add_trial(optuna.trial.create_trial(value=value, user_attrs={"label": label}))
    picked = [t for t in study.trials if t.number == 7]
    report = confirmed(study, store, picked, seeds=2)
    (seven,) = report.configs
    assert seven.values[0] == 90.0 and math.isnan(seven.values[1])
    # a replicate missing (or diverged) is one nan, and the report still shows and says so
    assert math.isnan(seven.summary.mean) and report.to_json()["configs"][0]["trial"] == 7
    assert "7" in str(report.table()) and isinstance(report.verdict, str)


def test_a_warm_pool_taken_by_a_run_is_not_stopped_by_its_expiry(monkeypatch):
    """Warm-pool expiry cancelling a pool a run has already taken: the expiry's timer may
    fire just as run_study takes the pool; the pool is the run's then, and keeps working."""
    from mnist_search.workers import spawn

    class StandIn:
        made: list[StandIn] = []

        def __init__(self, workers: int, spec: object, device: str) -> None:
            self.ahead, self.expiry, self.started, self.cancelled = False, None, 0.0, False
            StandIn.made.append(self)

        def cancel(self) -> None:
            self.cancelled = True

        def alive(self) -> bool:
            return True

    monkeypatch.setattr(spawn, "Pool", StandIn)
    spawn.start_ahead(2, None, "cpu")  # type: ignore[arg-type]
    taken = spawn.take_early()
    assert isinstance(taken, StandIn) and taken.expiry is not None
    taken.expiry.function(*taken.expiry.args)  # the timer firing at that very moment
    assert not taken.cancelled
    spawn.start_ahead(2, None, "cpu")  # type: ignore[arg-type]
    waiting = StandIn.made[-1]
    assert waiting is not taken and waiting.expiry is not None
    waiting.expiry.function(*waiting.expiry.args)  # unused: the expiry stops it
    assert waiting.cancelled and spawn.take_early() is None
