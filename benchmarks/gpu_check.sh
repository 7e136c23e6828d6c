#!/usr/bin/env bash
# The project's one GPU check (about 6 minutes on one H200):
#   1. the kernel and dispatch tests, compiled for the GPU (no interpreter);
#   2. benchmarks/kernels.py: fused attention and log-mel against PyTorch, with
#      an error column, peak memory and the limit checks (64-bit offsets, more
#      than 65535 sequences x heads, a log-mel batch past 2**31 values);
#   3. benchmarks/gpu_steps.py: a ViT-B forward + backward step, kernels on and
#      off, bfloat16 and float32, half the clips padded; the BAT pretraining step
#      on torch + kernels, JAX (XLA) and TensorFlow (XLA), each where installed;
#      one table with MFU against the GPU's bfloat16 peak.
# Logs, JSON and the table go to the folder given (default benchmarks/results).
# GPU_CHECK_BACKENDS names the backends of the pretraining step (default: torch jax tensorflow).
#
#     bash benchmarks/gpu_check.sh [results_dir]
#     bash benchmarks/gpu_check.sh --dry-run [results_dir]   # CPU, Triton's interpreter, tiny shapes
#
# Needs keras-bat installed with its torch extra (`pip install -e .[torch,jax]`). On a
# machine without a package index, wheels of keras and its missing dependencies in
# .whl/ are installed into a temporary folder first.
set -uo pipefail
cd "$(dirname "$0")/.."
dry_run=0 time_scale=1
# The dry run's interpreted kernels share a CPU with whatever else runs (the test suite's workers).
if [ "${1:-}" = "--dry-run" ]; then dry_run=1 time_scale=4; shift; fi
results=${1:-benchmarks/results}
mkdir -p "$results"
export KERAS_BACKEND=torch PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
status=0
section() { echo; echo "=== $*"; }
run() {  # run SECONDS LOG COMMAND...: a failing or timed-out part is reported, the rest still runs
  local seconds=$(( $1 * time_scale )) log=$2; shift 2
  timeout "$seconds" "$@" 2>&1 | tee "$results/$log"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then echo "!!! $* exited with $rc"; status=1; fi
}

if ! python -c "import keras, keras_bat, keras_bat_kernels" 2>/dev/null; then
  site=$(mktemp -d)
  if [ -d .whl ]; then python -m pip install -q --no-index --no-deps --target "$site" .whl/*.whl || exit 1; fi
  ln -s "$PWD/kernels" "$site/keras_bat_kernels"
  export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"
  python -c "import keras, keras_bat, keras_bat_kernels" || { echo "keras-bat is not importable"; exit 1; }
fi
if [ "$dry_run" = 1 ]; then
  export TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES=""
  smoke=--smoke
  steps="--warmup 0 --steps 1" encoder_steps="--warmup 0 --steps 1"  # each path once: CPU timings mean nothing
else
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  smoke=
  steps="--warmup 2 --steps 5" encoder_steps=
fi
python -c "import torch, triton, keras; print('torch', torch.__version__, '| triton', triton.__version__, '| keras', keras.__version__)"

if [ "$dry_run" = 0 ]; then
  section "kernel and dispatch tests, compiled for the GPU (fixed tiles)"
  parallel=$(python -c "import xdist" 2>/dev/null && echo "-n 8")
  KERAS_BAT_AUTOTUNE=0 run 150 gpu_tests.log python -m pytest -q -p no:cacheprovider $parallel \
    tests/kernels tests/test_ops_dispatch.py
fi

section "kernel benchmark and limit checks (autotuned tiles)"
run 150 kernels.log python benchmarks/kernels.py $smoke --output "$results/kernels.json"

section "training steps"
rm -f "$results/gpu_steps.jsonl"
run 150 steps_encoder.log python benchmarks/gpu_steps.py --workload encoder $smoke $encoder_steps \
  --output "$results/gpu_steps.jsonl"
for backend in ${GPU_CHECK_BACKENDS:-torch jax tensorflow}; do
  if ! KERAS_BACKEND=$backend python -c "import keras" 2>/dev/null; then
    echo "pretraining step on $backend: skipped, $backend is not installed"
    continue
  fi
  KERAS_BACKEND=$backend run 120 "steps_pretrain_$backend.log" \
    python benchmarks/gpu_steps.py --workload pretrain $smoke $steps --output "$results/gpu_steps.jsonl"
done
section "summary"
python benchmarks/gpu_steps.py --summarize "$results/gpu_steps.jsonl" | tee "$results/summary.txt"
exit $status
