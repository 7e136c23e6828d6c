#!/usr/bin/env bash
# Runs the whole test suite once per Keras backend; extra arguments go to pytest.
# The Triton kernel tests (tests/kernels) run in the torch pass, in Triton's CPU
# interpreter when there is no GPU (see tests/conftest.py).
# Tests run in KERAS_BAT_TEST_WORKERS processes (pytest-xdist; default: the cores, at
# most 4, each process holds the three frameworks; 0 runs them in this process).
set -u
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
cores=$(nproc 2>/dev/null || echo 1)
workers=${KERAS_BAT_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}
parallel=()
if [ "$workers" -gt 1 ] && python -c "import xdist" 2>/dev/null; then
  parallel=(-n "$workers" --dist worksteal)
fi
# JAX keeps what it compiles in a persistent cache for the run, so that the many processes the
# tests start (and models of the same shapes) compile each program once: every program, however
# quick to compile (the tests' models are tiny; measured: 160 s -> 133 s for
# test_models_audio_classifier.py in 2 workers).
jax_cache=$(mktemp -d)
trap 'rm -rf "$jax_cache"' EXIT
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$jax_cache}"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0}"
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="${JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES:-0}"
# XLA (JAX, and TensorFlow's jit-compiled steps) compiles the tests' tiny programs without LLVM's
# optimisations: compiling, not running, is what those programs cost (measured:
# test_models_audio_classifier.py under JAX 144 s -> 117 s in 2 workers).
export XLA_FLAGS="${XLA_FLAGS:---xla_backend_optimization_level=0}"
# Each worker computes on one thread when the workers fill the cores: torch's OpenMP threads (as many
# as the cores, in every worker) otherwise spin against each other's (measured:
# test_models_audio_classifier.py under torch in 2 workers 167 s -> 59 s; TensorFlow and JAX unchanged).
if [ ${#parallel[@]} -gt 0 ]; then
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
fi
failed=()
for backend in ${KERAS_BAT_BACKENDS:-tensorflow jax torch}; do
  echo "=== KERAS_BACKEND=$backend (pytest ${parallel[*]:-in one process})"
  KERAS_BACKEND=$backend python -m pytest -q "${parallel[@]}" "$@" || failed+=("$backend")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "test suite failed on: ${failed[*]}"
  exit 1
fi
echo "test suite passed on: ${KERAS_BAT_BACKENDS:-tensorflow jax torch}"
