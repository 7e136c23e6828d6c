#!/usr/bin/env bash
# Runs the whole test suite once per Keras backend; extra arguments go to pytest.
# The Triton kernel tests (tests/kernels) run in the torch pass, in Triton's CPU
# interpreter when there is no GPU (see tests/conftest.py).
set -u
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
failed=()
for backend in ${KERAS_BAT_BACKENDS:-tensorflow jax torch}; do
  echo "=== KERAS_BACKEND=$backend"
  KERAS_BACKEND=$backend python -m pytest -q "$@" || failed+=("$backend")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "test suite failed on: ${failed[*]}"
  exit 1
fi
echo "test suite passed on: ${KERAS_BAT_BACKENDS:-tensorflow jax torch}"
