#!/usr/bin/env bash
# Every check that needs a GPU, as one run from the repository root (at most 8.25 minutes, the sum
# of the time limits below): the CUDA tests, then bench_gpu.py at full size, one process per model
# (a process's CUDA graph pools stay reserved until it exits), then the ResNet-50 jobs side by side
# again under the CUDA MPS daemon where it is installed. Each step has its own time limit, and
# bench_gpu.py writes its file after every row, so a step cut short keeps the rows it finished.
# Writes OUT/gpu_check.log, OUT/bench_gpu_<step>.json and OUT/bench_gpu.json, every row together
# (OUT: first argument, default bench/results).
set -uo pipefail
out=${1:-bench/results}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
bench() { timeout "$1" python3 bench/bench_gpu.py --out "$out/bench_gpu_$2.json" "${@:3}"; }
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  timeout 150 python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py tests/test_members.py
  bench 60 resnet20 --models resnet20 --jobs-models
  bench 165 resnet50 --models resnet50
  bench 70 vit --models vit --jobs-models
  if command -v nvidia-cuda-mps-control >/dev/null; then
    CUDA_MPS_PIPE_DIRECTORY=$(mktemp -d) CUDA_MPS_LOG_DIRECTORY=$(mktemp -d)
    export CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    if nvidia-cuda-mps-control -d; then
      bench 50 resnet50_mps --models resnet50 --jobs-only --mps
      echo quit | nvidia-cuda-mps-control
    fi
  else
    echo "no nvidia-cuda-mps-control: the jobs=N rows under MPS are not measured"
  fi
  python3 bench/bench_gpu.py --out "$out/bench_gpu.json" \
    --merge "$out"/bench_gpu_{resnet20,resnet50,vit,resnet50_mps}.json
  date -u
} 2>&1 | tee "$out/gpu_check.log"
