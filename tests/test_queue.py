"""The queue in process, on temporary SQLite: grid points, queue order, claiming."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState
from test_study import SHAPES as STUDY_SHAPES

from mnist_search.search.queue import Claim, claim, counts, queue_order, trial_cost
from mnist_search.search.study import default_trials, grid_points, make_sampler, open_study
from mnist_search.spec import load_spec
from mnist_search.storage.connect import make_storage
from mnist_search.storage.internals import trial_id, trials_with_heartbeat

from helpers import write_study

# the five references of two shapes from test_study, plus a grid of two momentum values
SHAPES = STUDY_SHAPES.replace("epochs = 1\n", "epochs = 1\n[search]\nmomentum = [0.0, 0.9]\n")


def test_grid_points_and_default_trials(tmp_path, synthetic_dir):
    spec = load_spec(write_study(tmp_path / "shapes.toml", synthetic_dir, SHAPES))
    assert grid_points(spec) == [{"momentum": 0.0}, {"momentum": 0.9}]
    assert default_trials(spec) == 5 + 2


def test_queue_order_puts_the_costliest_shape_first_and_keeps_file_order(tmp_path,
                                                                        synthetic_dir):
    spec = load_spec(write_study(tmp_path / "shapes.toml", synthetic_dir, SHAPES))
    items = [({"label": r.label}, i) for i, r in enumerate(spec.references)]
    ordered = [attrs["label"] for attrs, _ in queue_order(spec, items)]
    assert ordered == ["big-a", "big-b", "big-c", "small-a", "small-b"]
    assert trial_cost(spec, {"label": "big-a"}) > trial_cost(spec, {"label": "small-a"})


def claims(tmp_path, synthetic_dir, **request):
    """Successive claims of one worker on a fresh SHAPES study: labels or grid points."""
    spec = load_spec(write_study(tmp_path / "shapes.toml", synthetic_dir, SHAPES))
    url = f"sqlite:///{tmp_path / 's.db'}"
    open_study(spec, url)  # 5 references, then 2 grid points (default shape: 128-64)
    storage = make_storage(url, heartbeat_interval=5, grace_period=15)
    study = optuna.load_study(study_name=spec.name, storage=storage,
                              sampler=make_sampler(spec))
    req = Claim(url=url, population=16, heartbeat=5, **request)
    out = []
    while got := claim(study, storage, spec, req):
        for t in got:  # seed and first heartbeat are recorded at claim time
            assert isinstance(t.user_attrs["seed"], int) and t.user_attrs["heartbeat_s"] == 5
        assert {trial_id(t) for t in got} <= trials_with_heartbeat(storage)
        out.append([t.user_attrs.get("label") or json.loads(t.user_attrs["grid_point"])
                    ["momentum"] for t in got])
    assert counts(study)["running"] == request["target"]
    assert counts(study)["waiting"] == 7 - request["target"]
    return out


@pytest.mark.parametrize("request_", [dict(workers=1), dict(workers=2, mixed=True)])
def test_a_lone_or_gpu_worker_takes_a_shape_group_whole_and_stops_at_the_target(
        tmp_path, synthetic_dir, request_):
    # the grid points (128-64, the costliest shape) come first, then big-*: each whole;
    # with one worker the share is everything, so the claim takes all it may at once
    got = claims(tmp_path, synthetic_dir, target=6, **request_)
    if request_["workers"] == 1:
        assert got == [[0.0, 0.9, "big-a", "big-b", "big-c", "small-a"]]
    else:
        assert got == [[0.0, 0.9], ["big-a", "big-b", "big-c"], ["small-a"]]


def test_cpu_workers_split_a_shape_group_at_their_share(tmp_path, synthetic_dir):
    """Two CPU workers: a claim stops inside a same-shape group once it holds its share of
    the remaining cost, so the other worker takes the rest instead of idling."""
    got = claims(tmp_path, synthetic_dir, target=6, workers=2)
    # 3 x 32 units then small-a, a share of half their cost: big-c goes to the next claim
    assert got == [[0.0, 0.9], ["big-a", "big-b"], ["big-c"], ["small-a"]]


def test_claimed_trials_are_never_claimed_twice(tmp_path, synthetic_dir):
    spec = load_spec(write_study(tmp_path / "shapes.toml", synthetic_dir, SHAPES))
    url = f"sqlite:///{tmp_path / 's.db'}"
    open_study(spec, url)
    storage = make_storage(url)
    studies = [optuna.load_study(study_name=spec.name, storage=storage) for _ in range(3)]
    request = Claim(url=url, target=7, workers=3, population=2)
    seen: list[int] = []
    while batch := [t for s in studies for t in claim(s, storage, spec, request)]:
        seen += [t.number for t in batch]
    assert sorted(seen) == list(range(7))
    assert all(t.state == TrialState.RUNNING for t in studies[0].get_trials())


@pytest.mark.parametrize("search,expected", [
    ("momentum = { low = 0.0, high = 0.9 }", 4),  # every sample stacks: a share at once
    ("depth = { low = 1, high = 2 }\nwidth = { low = 8, high = 64 }", 1),  # one at a time
    ("optimizer = ['sgd', 'adam']", 1),  # the optimizer is part of the stack key too
])
def test_sampled_trials_are_claimed_together_only_when_they_stack(tmp_path, synthetic_dir,
                                                                 search, expected):
    spec = load_spec(write_study(tmp_path / "s.toml", synthetic_dir,
                                 f"[fixed]\ndataset = DATA\nepochs = 1\n[search]\n{search}\n"))
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = open_study(spec, url)
    storage = make_storage(url)
    got = claim(study, storage, spec, Claim(url=url, target=8, workers=2, population=16))
    assert len(got) == expected


@pytest.mark.parametrize("request_,expected", [
    (dict(mixed=False), 1),  # shapes differ and nothing trains them side by side
    (dict(mixed=True), 12),  # every free slot: the engine is as wide as the slots
    (dict(mixed=True, proposals=5), 5),
])
def test_a_mixing_worker_asks_for_as_many_proposals_as_it_has_free_slots(
        tmp_path, synthetic_dir, request_, expected):
    spec = load_spec(write_study(tmp_path / "s.toml", synthetic_dir,
                                 "[fixed]\ndataset = DATA\nepochs = 1\n[search]\n"
                                 "depth = { low = 1, high = 2 }\n"
                                 "width = { low = 8, high = 64 }\n"))
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = open_study(spec, url)
    got = claim(study, make_storage(url), spec,
                Claim(url=url, target=40, workers=1, population=12, **request_))
    assert len(got) == expected
    assert len({t.number for t in got}) == expected


@pytest.mark.parametrize("retrying", [True, False])
def test_new_trials_claimed_together_carry_the_callers_seed_on_any_rdb_storage(
        tmp_path, synthetic_dir, retrying):
    """Created in one transaction by mnist-search's storage, one by one (then their attrs)
    by Optuna's own; either way each is RUNNING with the seed of the seed base the claim
    was given (a worker reads the study's once), and its live trial says the same."""
    from mnist_search.search.lifecycle import trial_seed

    spec = load_spec(write_study(tmp_path / "s.toml", synthetic_dir,
                                 "[fixed]\ndataset = DATA\nepochs = 1\n[search]\n"
                                 "lr = { low = 0.01, high = 0.1 }\n"))
    url = f"sqlite:///{tmp_path / 's.db'}"
    open_study(spec, url)
    storage = make_storage(url) if retrying else optuna.storages.RDBStorage(url)
    study = optuna.load_study(study_name=spec.name, storage=storage)
    got = claim(study, storage, spec, Claim(url=url, target=40, population=6, mixed=True,
                                            seed=7))
    assert [t.number for t in got] == list(range(6))
    reader = optuna.storages.RDBStorage(url)
    for t in got:
        stored = reader.get_trial(trial_id(t))
        assert stored.state == TrialState.RUNNING
        assert stored.user_attrs["seed"] == t.user_attrs["seed"] == trial_seed(7, t.number)


def _claim_until_empty(url: str, spec_path: str, workers: int, start, out) -> None:
    """One worker process: claim (one trial at a time, as a CPU worker claims sampled
    trials) until the study's target is reached; each claimed trial is told at once."""
    spec = load_spec(spec_path)
    storage = make_storage(url)
    study = optuna.load_study(study_name=spec.name, storage=storage)
    request = Claim(url=url, target=40, workers=workers, population=1)
    start.wait()
    got = []
    while batch := claim(study, storage, spec, request):
        for trial in batch:
            got.append(trial.number)
            study.tell(trial, 0.0)
    out.put(got)


def test_claimed_trials_are_never_claimed_twice_by_racing_processes(tmp_path, synthetic_dir):
    """Four processes claim from one SQLite study at once, started together: every trial
    (the 7 queued ones, then sampled ones up to the target) is claimed by exactly one of
    them, and the study holds exactly its target, no more."""
    import multiprocessing

    path = write_study(tmp_path / "shapes.toml", synthetic_dir, SHAPES)
    spec = load_spec(path)
    url = f"sqlite:///{tmp_path / 's.db'}"
    open_study(spec, url)
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_claim_until_empty, args=(url, str(path), 4, start, out))
             for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    # each process imports torch and the package first: on loaded cores that alone took
    # most of the 120 s this once waited, so the wait is long; a crash shows in exitcode
    claimed = [n for _ in procs for n in out.get(timeout=600)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(claimed) == list(range(40))  # each once, none beyond the target
    final = optuna.load_study(study_name=spec.name, storage=make_storage(url)).get_trials()
    assert len(final) == 40 and all(t.state == TrialState.COMPLETE for t in final)
    labels = [t.user_attrs["label"] for t in final if "label" in t.user_attrs]
    assert sorted(labels) == sorted(r.label for r in spec.references)


@pytest.mark.slow  # waits out a heartbeat's grace period
def test_stale_trials_are_left_alone_for_a_grace_after_an_outage(tmp_path, synthetic_dir):
    """Right after the storage came back, nobody's heartbeats could be recorded: a claim
    leaves a trial that looks stale; once a grace period has passed, it fails it."""
    import time

    spec = load_spec(write_study(tmp_path / "shapes.toml", synthetic_dir, SHAPES))
    url = f"sqlite:///{tmp_path / 's.db'}"
    open_study(spec, url)
    storage = make_storage(url, heartbeat_interval=1, grace_period=1)
    study = optuna.load_study(study_name=spec.name, storage=storage)
    request = Claim(url=url, target=7, workers=1, population=1, heartbeat=1)
    [orphan] = claim(study, storage, spec, request)  # its worker dies: no more beats
    time.sleep(2.2)
    storage.outage_ended = time.monotonic()  # the storage just came back
    claim(study, storage, spec, request)
    assert study.get_trials()[orphan.number].state == TrialState.RUNNING
    storage.outage_ended = time.monotonic() - 5  # long enough ago
    claim(study, storage, spec, request)
    assert study.get_trials()[orphan.number].state == TrialState.FAIL
