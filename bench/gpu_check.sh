#!/usr/bin/env bash
# GPU checks, as one short script for a machine with CUDA (writes figures to $OUT).
# Expects: torch with CUDA; the wheels of optuna, optuna-dashboard, sqlalchemy, alembic,
# colorlog, mako, bottle, greenlet and pytest in $WHEELS if they are not installed; MNIST in
# ./data, or its four gzipped IDX files in $MNIST_GZ. First the `gpu` tests, then the
# benchmarks of issue 24's targets, each with its own time limit.
# Usage: bench/gpu_check.sh [STEP ...]   (default: every step, in the order below; about
# 5-6 minutes on an H100 if each takes what the earlier H100/H200 runs suggest, 9.5 at
# the limits). Name steps to run fewer, say `bench/gpu_check.sh gpu-tests tf32`.
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu runs the steps' plumbing on a machine without one
WHEELS=${WHEELS:-wheels}
export PYTHONUNBUFFERED=1 MNIST_SEARCH_DATA=${MNIST_SEARCH_DATA:-data}
if [ -d "$WHEELS" ]; then $PY -m pip install -q --no-index --find-links "$WHEELS" \
  optuna optuna-dashboard sqlalchemy alembic colorlog pytest 2>&1 | tail -1; fi
$PY -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
if [ -n "${MNIST_GZ:-}" ]; then
  mkdir -p "$MNIST_SEARCH_DATA/MNIST/raw"
  for f in "$MNIST_GZ"/*.gz; do gunzip -c "$f" >"$MNIST_SEARCH_DATA/MNIST/raw/$(basename "$f" .gz)"; done
fi
WANTED=" $* "
step() {  # step NAME SECONDS CMD...: one check, its output in $OUT/NAME.txt
  local name=$1 limit=$2; shift 2
  if [ "$WANTED" != "  " ] && [[ "$WANTED" != *" $name "* ]]; then return; fi
  run_step "$name" "$limit" "$@"
}
extra() {  # extra NAME SECONDS CMD...: a step run only when named
  local name=$1 limit=$2; shift 2
  if [[ "$WANTED" != *" $name "* ]]; then return; fi
  run_step "$name" "$limit" "$@"
}
run_step() {
  local name=$1 limit=$2; shift 2
  echo "== $name"; local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
  echo "   ($name: exit ${PIPESTATUS[0]}, $((SECONDS - t0)) s)"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
$PY -m mnist_search data verify || exit 1
step sgemm 20 $PY -c "
import time, torch
a, b = (torch.randn(8192, 8192, device='cuda') for _ in range(2))
for _ in range(3): a @ b
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(10): a @ b
torch.cuda.synchronize(); s = (time.perf_counter() - t) / 10
print(f'fp32 sgemm 8192^3 (no TF32): {2 * 8192**3 / s / 1e12:.1f} TFLOP/s')"
# The CUDA paths bit for bit (graph against eager, side by side, buckets) before any figure.
step gpu-tests 75 $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py
# Issue 24's targets, in its order. The notebook grid, start to exit (target <= 5 s).
step grid 45 $PY bench/bench_notebook_grid.py --workers 1 --device $DEVICE
# Bench C, 40 trials, 2 workers (target <= 8 s).
step search 45 $PY bench/bench_search.py --device $DEVICE --workers 2 --trials 40 --before none
# studies/search.toml, 1,000 trials (target <= 120 s), with the sampler's and the storage's
# share of the workers' time; the run stops itself at 130 s and says how many finished.
step search1000 150 $PY bench/bench_search.py --device $DEVICE --workers 2 --trials 1000 \
  --before none --shares --run-args="--timeout 130"
# 256 same-shape baselines (target >= 5,000 trials/min) and 256 distinct search-like
# shapes in width-quantile buckets (target: at least half that).
step same-shape 30 $PY bench/bench_population.py --device $DEVICE --k 256 --epochs 5
step mixed256 60 $PY bench/bench_mixed.py --device $DEVICE --k 256 --epochs 2 --ways buckets
# best-mlp (Adam family, cosine): trials and epochs per minute over 60 s (target >= 40
# trials/min; its 99.0% selection needs a 900 s run of its own).
step best-mlp 75 $PY bench/bench_rate.py --study best-mlp --device $DEVICE --timeout 60
# TF32 (study files' matmul_precision): the grid's accuracy change (bound 0.1 pp) and
# best-mlp's speed-up.
step tf32 75 $PY bench/bench_tf32.py --device $DEVICE --replicates 3 --epochs-speed 3 --repeat 2
# Earlier rounds' checks, run when named: mixed shapes side by side against buckets at
# K = 8 and 64, bench C without mixing, and the CUDA graphs' speed-up with dropout.
extra mixed 120 $PY bench/bench_mixed.py --device $DEVICE --k 8 64 --epochs 5 --max-apart 8
extra search_nomix 60 $PY bench/bench_search.py --device $DEVICE --workers 2 --trials 40 \
  --before none --run-args=--no-mix
extra cuda_graphs 40 $PY bench/bench_cuda_graphs.py --k 1 11 --epochs 1 --dropout
