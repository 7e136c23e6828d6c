"""keras.distribution on JAX: a model-parallel pretraining step on 4 virtual CPU
devices gives the single-device step's weights, with the Megatron-style layout.
(Data parallelism over 4 devices, 6 steps of pretraining and of a probe against
one device: `test_training_multiprocess.py`.)"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from keras_bat.training.distribution import make_distribution

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="keras.distribution is tested in the JAX pass")
@pytest.mark.long
def test_distributed_pretraining_step_equals_single_device():
    # A fresh process: the virtual devices must be configured before JAX starts.
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "distributed_step.py"), "model_parallel"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    assert report["model_parallel"]["max_update"] > 1e-4  # the step changed the weights
    assert report["model_parallel"]["max_weight_difference"] <= 5e-6  # summation order varies between runs
    # Megatron-style: column-parallel qkv, gate and fc1 (kernels split on their output axis, biases
    # alike), row-parallel proj and fc2 (split on their input axis); everything else replicated.
    megatron = {r".*attn/(qkv|gate)/kernel": [None, "model"], r".*attn/(qkv|gate)/bias": ["model"],
                r".*attn/proj/kernel": ["model", None], r".*fc1/kernel": [None, "model"], r".*fc1/bias": ["model"],
                r".*fc2/kernel": ["model", None]}
    variables = report["model_parallel"]["variables"]
    expected = [[path, next((spec for pattern, spec in megatron.items() if re.fullmatch(pattern, path)), None)]
                for path, _ in variables]
    assert variables == expected
    assert sum(spec is not None for _, spec in expected) >= 8 * 2 * 2  # 8 matrices a block; student and teacher
    assert "train.batch_size=6 does not split over the 4 devices" in report["refused_batch"]


def test_distribution_errors_are_clear():
    if keras.backend.backend() != "jax":
        with pytest.raises(ValueError, match="JAX backend"):
            make_distribution("data_parallel")
        return
    with pytest.raises(ValueError, match="kind"):
        make_distribution("pipeline_parallel")
    with pytest.raises(ValueError, match="must divide"):
        make_distribution("model_parallel", model_parallel=3, devices=keras.distribution.list_devices() * 2)
