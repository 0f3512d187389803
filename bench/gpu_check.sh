#!/usr/bin/env bash
# GPU checks, as one short script for a machine with CUDA (writes figures to $OUT).
# Expects: torch with CUDA; the wheels of optuna, optuna-dashboard, sqlalchemy, alembic,
# colorlog, mako, bottle, greenlet and pytest in $WHEELS if they are not installed; MNIST in
# ./data, or its four gzipped IDX files in $MNIST_GZ. First the `gpu` tests, then the
# benchmarks; sized to finish in about 5 minutes on an H100.
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
PY=${PY:-python3}
WHEELS=${WHEELS:-wheels}
export PYTHONUNBUFFERED=1 MNIST_SEARCH_DATA=${MNIST_SEARCH_DATA:-data}
if [ -d "$WHEELS" ]; then $PY -m pip install -q --no-index --find-links "$WHEELS" \
  optuna optuna-dashboard sqlalchemy alembic colorlog pytest 2>&1 | tail -1; fi
$PY -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
if [ -n "${MNIST_GZ:-}" ]; then
  mkdir -p "$MNIST_SEARCH_DATA/MNIST/raw"
  for f in "$MNIST_GZ"/*.gz; do gunzip -c "$f" >"$MNIST_SEARCH_DATA/MNIST/raw/$(basename "$f" .gz)"; done
fi
step() {  # step NAME SECONDS CMD...: one check, its output in $OUT/NAME.txt
  local name=$1 limit=$2; shift 2
  echo "== $name"; local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
  echo "   ($name: exit ${PIPESTATUS[0]}, $((SECONDS - t0)) s)"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
$PY -m mnist_search data verify || exit 1
step sgemm 30 $PY -c "
import time, torch
a, b = (torch.randn(8192, 8192, device='cuda') for _ in range(2))
for _ in range(3): a @ b
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(10): a @ b
torch.cuda.synchronize(); s = (time.perf_counter() - t) / 10
print(f'fp32 sgemm 8192^3 (no TF32): {2 * 8192**3 / s / 1e12:.1f} TFLOP/s')"
# The CUDA paths bit for bit (graph against eager, side by side, buckets) before any figure.
step gpu-tests 120 $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py
# Earlier runs' figures are in docs/speed.md; this one measures mixed-shape populations
# (side by side against buckets at K = 8 and 64; K = 256 in one bucket per depth took over
# 100 s on an H200, in width quantiles it pads half the FLOPs) and the grid and search
# that use them.
step mixed 120 $PY bench/bench_mixed.py --device cuda --k 8 64 --epochs 5 --max-apart 8
step mixed256 60 $PY bench/bench_mixed.py --device cuda --k 256 --epochs 2 --ways buckets
step same-shape 40 $PY bench/bench_population.py --device cuda --k 256 --epochs 5
step grid 60 $PY bench/bench_notebook_grid.py --workers 1 --device cuda
step search 60 $PY bench/bench_search.py --device cuda --workers 2 --trials 40 --before none
step search_nomix 60 $PY bench/bench_search.py --device cuda --workers 2 --trials 40 --before none --run-args=--no-mix
step cuda_graphs 40 $PY bench/bench_cuda_graphs.py --k 1 11 --epochs 1 --dropout
