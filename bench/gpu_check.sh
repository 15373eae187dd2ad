#!/usr/bin/env bash
# Every check that needs a GPU, as one run from the repository root: the CUDA tests, then
# bench_gpu.py at full size. Writes OUT/gpu_check.log and OUT/bench_gpu.json (OUT: first argument,
# default bench/results).
set -uo pipefail
out=${1:-bench/results}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  timeout 240 python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py tests/test_members.py
  # one process per model: a process's CUDA graph pools stay reserved until it exits
  for model in resnet20 resnet50 vit; do
    timeout 150 python3 bench/bench_gpu.py --models $model --out "$out/bench_gpu_$model.json"
  done
} 2>&1 | tee "$out/gpu_check.log"
