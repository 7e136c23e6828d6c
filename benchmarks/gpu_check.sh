#!/usr/bin/env bash
# The project's GPU check, for a CUDA machine with keras-bat and the torch backend
# installed: the Triton kernel tests and the kernel dispatch tests compiled for the
# GPU, then the kernel benchmark (table + JSON). Logs and JSON go to the folder
# given as first argument (default benchmarks/results).
#
#     bash benchmarks/gpu_check.sh [results_dir]
set -uo pipefail
cd "$(dirname "$0")/.."
results=${1:-benchmarks/results}
mkdir -p "$results"
export KERAS_BACKEND=torch PYTHONUNBUFFERED=1
status=0

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python -c "import torch, triton, keras; print('torch', torch.__version__, '| triton', triton.__version__, '| keras', keras.__version__)"

echo "=== kernel tests on the GPU"
timeout "${GPU_CHECK_TEST_TIMEOUT:-240}" python -m pytest -q -p no:cacheprovider \
  tests/kernels tests/test_ops_dispatch.py 2>&1 | tee "$results/gpu_tests.log" || status=1

echo "=== kernel benchmark"
timeout "${GPU_CHECK_BENCHMARK_TIMEOUT:-240}" python benchmarks/kernels.py \
  --output "$results/kernels.json" 2>&1 | tee "$results/kernels.log" || status=1
exit $status
