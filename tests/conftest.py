"""Shared fixtures: tiny synthetic IDX datasets the tests write themselves."""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from mnist_search import data as data_mod
from mnist_search.data import FILES, DatasetInfo, sha256_file
from mnist_search.data.synthetic import write_synthetic

REPO = Path(__file__).resolve().parent.parent


# What starts a process in a test's code, or in the helpers and fixtures it uses: the
# `mnist-search` command, worker pools, a Jupyter kernel, a browser.
STARTS_PROCESSES = re.compile(
    r"subprocess|Popen|sys\.executable|run_study|multiprocessing|\bexe\(|start_run|"
    r"\bconfirm\(|[\"'](run|confirm|dashboard)[\"']|nbclient|jupyter|webdriver|chromium|"
    r"workers\.(spawn|launch|pool)|Pool\(")
QUICK_ENV = "MNIST_SEARCH_QUICK"  # set by `make quick`: a process started there is a failure


_STARTS: dict[int, bool] = {}  # id of a function -> whether it starts processes, as found


def _starts_processes(func: object, namespaces: list[dict], depth: int = 0) -> bool:
    """Whether `func`'s source, or that of a test helper or fixture it names (followed three
    deep through the test module, helpers.py and this file), matches STARTS_PROCESSES."""
    func = getattr(func, "_get_wrapped_function", lambda: func)()  # a fixture's function
    if id(func) in _STARTS or depth > 3 or not callable(func):
        return _STARTS.get(id(func), False)
    _STARTS[id(func)] = False  # while it is looked at: a cycle adds nothing
    try:
        source = inspect.getsource(func)  # type: ignore[arg-type]
        where = Path(inspect.getfile(func)).resolve()  # type: ignore[arg-type]
    except (OSError, TypeError):
        return False
    if REPO / "tests" not in where.parents:
        return False  # the package's own code: the guard below finds what it starts
    names = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", source))
    found = bool(STARTS_PROCESSES.search(source)) or any(
        _starts_processes(ns[n], namespaces, depth + 1)
        for n in sorted(names) for ns in namespaces if n in ns)
    _STARTS[id(func)] = found
    return found


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`procs` marks every test that starts a process (quick tier: `-m "not slow and not
    procs"`); `gpu` tests skip, with the reason, where no CUDA device is present; -ra
    counts them."""
    import torch

    import helpers

    namespaces = [vars(helpers), globals()]
    for item in items:
        module = getattr(item, "module", None)
        spaces = ([vars(module)] if isinstance(module, types.ModuleType) else []) + namespaces
        func = getattr(item, "function", None)
        if func is not None and item.get_closest_marker("procs") is None and (
                _starts_processes(func, spaces) or any(
                    _starts_processes(ns[f], spaces)
                    for f in getattr(item, "fixturenames", ()) if not f.startswith("_")
                    for ns in spaces if f in ns)):
            item.add_marker(pytest.mark.procs)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="gpu: no CUDA device here (bench/gpu_check.sh runs these)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_process_in_the_quick_tier(request: pytest.FixtureRequest,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Under `make quick`, a test not marked `procs` that starts a process fails, naming
    itself: the marking above missed it (its helper starts one some other way)."""
    if not os.environ.get(QUICK_ENV) or request.node.get_closest_marker("procs"):
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"{request.node.nodeid} starts a process but is not marked procs: "
                           "name what starts it in tests/conftest.py's STARTS_PROCESSES")

    import multiprocessing.process

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(os, "fork", refuse)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory dataset: 512 train / 128 test images, learnable, headers valid."""
    return write_synthetic(tmp_path_factory.mktemp("synth"), n_train=512, n_test=128, seed=0)


@pytest.fixture()
def tiny_pinned(synthetic_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                ) -> tuple[str, Path]:
    """A registered dataset 'tiny' with pinned hashes and counts, laid out like MNIST.

    Lets the corruption tests go through exactly the code path real MNIST uses.
    """
    info = DatasetInfo("tiny", "TINY", {f: sha256_file(synthetic_dir / f) for f in FILES},
                       ("npm",), counts=(512, 128))
    monkeypatch.setitem(data_mod.DATASETS, "tiny", info)
    root = tmp_path / "root"
    raw = root / "TINY" / "raw"
    raw.mkdir(parents=True)
    for f in FILES:
        shutil.copy(synthetic_dir / f, raw / f)
    data_mod.clear_cache()
    return "tiny", root


def real_data_root() -> Path:
    """Where CI's `make test` put verified MNIST (the Makefile fetches before pytest)."""
    return data_mod.default_root()


@pytest.fixture(scope="session")
def slow_synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4,096 train images: enough steps per epoch that a trial can be killed mid-way."""
    return write_synthetic(tmp_path_factory.mktemp("synth4k"), n_train=4096, n_test=256, seed=1)


MAP_ENV = "MNIST_SEARCH_MODULE_MAP"  # a folder: record which package modules each test file runs


def pytest_configure(config: pytest.Config) -> None:
    """With $MNIST_SEARCH_MODULE_MAP set, each test process records, per test file, the
    package modules whose functions ran in it (tests/module_map.py turns that into the
    design page's map). Code run in a worker process is not seen: that is said there."""
    folder = os.environ.get(MAP_ENV)
    if folder:
        config.pluginmanager.register(_ModuleMap(Path(folder)), "module_map")


class _ModuleMap:
    def __init__(self, folder: Path) -> None:
        self.folder, self.current, self.seen = folder, "", {}  # type: ignore[var-annotated]
        self.package = str(REPO / "mnist_search")
        self.names: dict[str, str | None] = {}

    def _profile(self, frame: types.FrameType, event: str, arg: object) -> None:
        if event != "call":
            return
        name = frame.f_code.co_filename
        module = self.names.get(name, "")
        if module == "":
            module = self.names[name] = (
                ".".join(Path(name).relative_to(REPO).with_suffix("").parts).removesuffix(
                    ".__init__") if name.startswith(self.package) else None)
        if module is not None:
            self.seen.setdefault(module, set()).add(self.current)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> object:
        import threading

        self.current = item.nodeid.split("::")[0]
        sys.setprofile(self._profile)
        threading.setprofile(self._profile)
        try:
            return (yield)
        finally:
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type]

    def pytest_sessionfinish(self) -> None:
        import json

        self.folder.mkdir(parents=True, exist_ok=True)
        out = self.folder / f"map-{os.getpid()}.json"
        out.write_text(json.dumps({m: sorted(t) for m, t in self.seen.items()}))
