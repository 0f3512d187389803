# Two commands for a fresh machine: `make run` and `make test`.
# Everything else here is a step they depend on.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DATA   ?= data

.PHONY: run test quick lint docs bench data install clean

# pip (not uv/poetry) so torch/torchvision resolve from what the machine's pip config offers.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres,docs]'
	touch $(STAMP)

install: $(STAMP)

data: $(STAMP)
	$(BIN)/mnist-search data fetch --dataset mnist --root $(DATA)

run: data
	$(BIN)/mnist-search run studies/notebook.toml --workers 2
	$(BIN)/mnist-search show notebook
	@echo "Inspect it in the browser: $(BIN)/mnist-search dashboard  (http://127.0.0.1:8080/)"

# ruff for style; import-linter for the one-way layers (pyproject [tool.importlinter]);
# mypy for types at every boundary (pyproject [tool.mypy]).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# The documentation site (mkdocs.yml, docs/) into site/; --strict fails on a broken link.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict  # not --quiet: it hides the warnings strict counts

test: data lint docs
	$(BIN)/python -m pytest

# The quick tier: the tests that start no process and need no real MNIST (under a minute on
# 2 cores), one test process per core with one thread each; a test that starts a process
# without its `procs` mark fails here.
quick: $(STAMP)
	MNIST_SEARCH_QUICK=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto -m "not slow and not procs" -p no:cacheprovider

bench: data
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_notebook_grid.py --workers 2 --repeat 3 --before 7482935
	$(BIN)/python bench/bench_search.py --trials 40 --workers 2 --before 7482935
	@# a tiny trial's bookkeeping against Optuna's own loop (SQLite; PostgreSQL with $$MNIST_SEARCH_TEST_PG)
	$(BIN)/python bench/bench_bookkeeping.py --trials 200 --before 2315163
	@# answers with their noise: the L2 question with seeds, confirm, the notebook x3
	$(BIN)/python bench/bench_answers.py --workers 2
	@# from the command's start to the first training step, phase by phase
	$(BIN)/python bench/bench_startup.py --repeat 3 --before a9ddc18
	@# 16 workers on one PostgreSQL study: $$MNIST_SEARCH_TEST_PG's server, or (as root) .ci/postgres.sh's
	@if [ -n "$$MNIST_SEARCH_TEST_PG" ] || [ "$$(id -u)" = 0 ]; then \
	  $(BIN)/python bench/bench_workers.py --runs 4 --workers 4; \
	else echo "bench_workers skipped: no PostgreSQL server (set MNIST_SEARCH_TEST_PG)"; fi
	@# killed workers and runs, two server restarts, then the invariants (root: it restarts
	@# the server .ci/postgres.sh started)
	@if [ -n "$$MNIST_SEARCH_TEST_PG" ] && [ "$$(id -u)" = 0 ]; then \
	  $(BIN)/python bench/bench_chaos.py --trials 200 --workers 3 --seconds 180; \
	else echo "bench_chaos skipped: needs root and MNIST_SEARCH_TEST_PG"; fi

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache site
