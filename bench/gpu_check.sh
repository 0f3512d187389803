#!/usr/bin/env bash
# GPU checks, as one short script for a machine with CUDA (writes figures to $OUT).
# Expects: torch with CUDA; optuna, optuna-dashboard, sqlalchemy, alembic, colorlog wheels
# in ./wheels (carried along) if they are not installed; MNIST already in ./data.
# Sized to finish in under 5 minutes on an H100.
set -euo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
PY=${PY:-python3}
if [ -d wheels ]; then $PY -m pip install -q --no-index --find-links wheels \
  optuna optuna-dashboard sqlalchemy alembic colorlog click 2>&1 | tail -1 || true; fi
$PY -m pip install -q --no-deps -e . >/dev/null
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
export MNIST_SEARCH_DATA=${MNIST_SEARCH_DATA:-data}
$PY -m mnist_search data verify | tee "$OUT/data.txt"
{ $PY bench/bench_population.py --device cuda --k 1 8 64 256 ; } 2>&1 | tee "$OUT/population.txt"
{ $PY bench/bench_notebook_grid.py --workers 1 --device cuda ; } 2>&1 | tee "$OUT/grid.txt"
{ $PY -c "
import time, torch
from mnist_search.config import TrainConfig
from mnist_search.training.train import train
r = train(TrainConfig(momentum=0.9, epochs=1, device='cuda'))
print(f'bench A on cuda: {r.seconds:.2f} s/epoch, test acc {r.test_accuracy:.2f}%')
" ; } 2>&1 | tee "$OUT/bench_a.txt"
# last, as it is the least sure to fit: torch.compile against eager on the GPU
{ timeout 120 $PY bench/bench_compile.py --device cuda --k 1 64 ; } 2>&1 | tee "$OUT/compile.txt" || true
