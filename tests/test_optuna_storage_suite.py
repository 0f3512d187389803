"""Optuna's own storage tests, with every RDBStorage they build replaced by mnist-search's
RetryingRDBStorage: as they are, with faults that commit nothing injected before a call's
commit, and with faults injected after a commit where retry.py says a lost commit is made
harmless. The check that the retrying storage is a faithful Optuna storage.

The tests come from the sdist of the installed Optuna (its tests/ folder), fetched once with
pip (PyPI); without it (no network) the test is skipped with that reason. On SQLite (the
cached and the plain RDB storage) three times, and once more on PostgreSQL
($MNIST_SEARCH_TEST_PG's server, every test's storage in a fresh schema) with faults after
commits, the case a network database meets; tests/optuna_suite/conftest_retrying.py does the
rest.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
SUBSET = ["tests/storages_tests/rdb_tests/test_storage.py",
          "tests/storages_tests/test_cached_storage.py",
          "tests/storages_tests/test_storages.py",  # its sqlite cases only
          "tests/storages_tests/test_heartbeat.py"]  # all SQLite, some without it in the id
# fails for the stock RDBStorage as well, here: it expects a missing driver module, and
# meets an unresolvable host first on a machine with psycopg installed
STOCK_FAILURES = {"test_init_db_module_import_error"}
# on PostgreSQL, where this harness moves each test's storage into a schema of its own: one
# asserts that the storage's URL is the SQLite file's it was given; the other's child
# processes open `storage.url`, which names the server's database but not the test's schema
ON_POSTGRES = {"test_init_url_template", "test_fail_stale_trials_with_race_condition"}


@pytest.fixture(scope="module")
def optuna_tests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("fakeredis", reason="Optuna's test helpers import fakeredis")
    where = tmp_path_factory.mktemp("optuna-sdist")
    got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                          ":all:", "-q", "-d", str(where), f"optuna=={optuna.__version__}"],
                         capture_output=True, text=True, timeout=300)
    archives = list(where.glob("optuna-*.tar.gz"))
    if got.returncode != 0 or not archives:
        pytest.skip(f"the optuna {optuna.__version__} sdist could not be fetched: "
                    f"{got.stderr.strip().splitlines()[-1:]}")
    with tarfile.open(archives[0]) as tar:
        tar.extractall(where, filter="data")
    root = next(where.glob("optuna-*/"))
    shutil.copy(HERE / "optuna_suite" / "conftest_retrying.py",
                root / "tests" / "storages_tests" / "conftest.py")
    return root


def _start(optuna_tests: Path, faults: str, **env: str) -> subprocess.Popen[str]:
    keyword = "sqlite or not test_storages"
    return subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "-o", "addopts=", *SUBSET, "-k", keyword],
                            cwd=optuna_tests, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "MNIST_SEARCH_SUITE_FAULTS": faults, **env})


@pytest.fixture(scope="module")
def suites(optuna_tests: Path) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """The four runs started at once (their heartbeat tests mostly sleep, so together they
    take about as long as the slowest alone): SQLite as they are, with faults before and
    after commits, and PostgreSQL with faults after commits, each in a database of its own
    (dropped after), so whatever Optuna's tests do to a server (one of them builds an old
    schema version) stays out of the database the other tests use."""
    runs = {faults: _start(optuna_tests, faults) for faults in ("none", "before", "after")}
    url, own = os.environ.get("MNIST_SEARCH_TEST_PG"), f"suite_{uuid.uuid4().hex[:12]}"
    admin = None
    if url:
        import sqlalchemy
        from sqlalchemy.engine import make_url

        admin = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {own}"))
        runs["postgres"] = _start(optuna_tests, "after", MNIST_SEARCH_SUITE_PG=make_url(
            url).set(database=own).render_as_string(hide_password=False))
    try:
        yield runs
    finally:
        for proc in runs.values():
            proc.kill()
            proc.wait()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(sqlalchemy.text(f"DROP DATABASE {own} WITH (FORCE)"))
            admin.dispose()


def _output(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=900)
    return re.sub(r"\x1b\[[0-9;]*m", "", out)


def test_optunas_storage_tests_pass_on_postgresql_through_lost_commits(suites):
    if "postgres" not in suites:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            "MNIST_SEARCH_TEST_PG is not set (.ci/run starts a server and sets it)")
    out = _output(suites["postgres"])
    failed = set(re.findall(r"^FAILED \S+::(\w+)", out, re.M))
    passed = int((re.search(r"(\d+) passed", out) or [0, 0])[1])
    moved = re.search(r"(\d+) storages on PostgreSQL", out)
    injected = re.search(r"faults injected \(\w+\): \d+ before a commit, (\d+) after", out)
    print(f"\noptuna's storage tests on PostgreSQL, faults after commits: {passed} passed, "
          f"failed {sorted(failed)}; {moved[1] if moved else 0} storages on the server, "
          f"{injected[1] if injected else 0} faults injected")
    assert passed > 150, out[-3000:]
    assert failed <= STOCK_FAILURES | ON_POSTGRES, out[-3000:]
    assert moved is not None and int(moved[1]) > 100  # the storages did run on the server
    assert injected is not None and int(injected[1]) > 50


@pytest.mark.parametrize("faults", ["none", "before", "after"])
def test_optunas_storage_tests_pass_on_the_retrying_storage(suites, faults):
    out = _output(suites[faults])
    failed = set(re.findall(r"^FAILED \S+::(\w+)", out, re.M))
    passed = int((re.search(r"(\d+) passed", out) or [0, 0])[1])
    injected = re.search(r"faults injected \(\w+\): (\d+) before a commit, (\d+) after", out)
    print(f"\noptuna's storage tests, faults {faults}: {passed} passed, failed {sorted(failed)}"
          f"; injected {injected.groups() if injected else None}")
    assert passed > 150, out[-3000:]
    assert failed <= STOCK_FAILURES, out[-3000:]
    assert injected is not None
    if faults != "none":
        assert int(injected[1 if faults == "before" else 2]) > 50  # the faults were real
