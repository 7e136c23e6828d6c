"""keras.distribution on JAX: a data-parallel and a model-parallel pretraining
step on 4 virtual CPU devices give the single-device step's weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from keras_bat.training.distribution import make_distribution

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="keras.distribution is tested in the JAX pass")
def test_distributed_pretraining_step_equals_single_device():
    # A fresh process: the virtual devices must be configured before JAX starts.
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "distributed_step.py")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    for kind in ("data_parallel", "model_parallel"):
        assert report[kind]["max_update"] > 1e-4  # the step changed the weights
        assert report[kind]["max_weight_difference"] <= 1e-5, kind
    assert report["model_parallel"]["sharded_variables"] > 0


def test_distribution_errors_are_clear():
    if keras.backend.backend() != "jax":
        with pytest.raises(ValueError, match="JAX backend"):
            make_distribution("data_parallel")
        return
    with pytest.raises(ValueError, match="kind"):
        make_distribution("pipeline_parallel")
    with pytest.raises(ValueError, match="must divide"):
        make_distribution("model_parallel", model_parallel=3, devices=keras.distribution.list_devices() * 2)
