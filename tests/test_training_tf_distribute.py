"""tf.distribute on the TensorFlow backend: `keras-bat pretrain`, a CGP `keras-bat probe` and
`keras-bat finetune` with `distribution.kind=data_parallel` (MirroredStrategy) over 2 logical
CPU devices give, after 6 steps, the weights of 1 device with the same global batch (dropout,
drop-path, the pretrainer's masks and the augmentations draw per example, not per replica); a
TF_CONFIG cluster (MultiWorkerMirroredStrategy, which Keras 3's fit does not run) and layouts
that MirroredStrategy does not have are refused with one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from helpers import preset_weights
from test_training_multiprocess import RECIPES, largest_difference, weights_of

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="tf.distribute is the TensorFlow backend's (tested in the TensorFlow pass)")

FINETUNE = {**RECIPES["probe"], "name": "mirrored_finetune",
            "model": {**RECIPES["probe"]["model"], "drop_path": 0.1},
            "head": {"type": "linear", "dropout": 0.2}, "train": {**RECIPES["probe"]["train"], "finetune": True},
            "augment": {"gain": True, "time_roll": True, "color_noise_chance": 0.5, "freq_mask_param": 8,
                        "time_mask_param": 16}}
COMMANDS = {"pretrain": RECIPES["pretrain"], "probe": RECIPES["probe"], "finetune": FINETUNE}

# Runs the commands one after the other in one process whose CPU is split into DEVICES logical
# devices (TensorFlow fixes its devices when it starts, hence a process of its own).
RUNNER = """
import sys
import tensorflow as tf

devices, folder, settings = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
from keras_bat.cli import main

for command, recipe in (("pretrain", "pretrain"), ("probe", "probe"), ("probe", "finetune")):  # train.finetune
    main([command, f"{folder}/{recipe}.yaml", "--set", f"output_dir={folder}/{recipe}/{devices}", *settings])
"""


def run_commands(folder, devices, settings=()):
    env = dict(os.environ, PYTHONPATH=str(ROOT), KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    return subprocess.run([sys.executable, "-c", RUNNER, str(devices), str(folder), *settings], env=env,
                          capture_output=True, text=True, timeout=900)


def write_recipes(folder):
    for command, recipe in COMMANDS.items():
        (folder / f"{command}.yaml").write_text(yaml.safe_dump({"description": "a small mirrored run",
                                                                "base": recipe}))
    return folder


def without_key_biases(weights):
    """The weights with the attention's key biases left out: their gradient is zero in exact
    arithmetic (a shift of every key leaves the softmax unchanged), so Adam's normalised steps
    turn each summation order's rounding noise into updates of up to the learning rate."""
    weights = dict(weights)
    for name in [name for name in weights if name.endswith("attn/qkv/bias")]:
        query, _, value = np.split(weights[name], 3)
        weights[name] = np.concatenate([query, value])
    return weights


# One test for the three commands: pytest-xdist would run a shared fixture once in each worker.
@pytest.mark.long
def test_mirrored_devices_train_the_weights_of_one_device(tmp_path):
    write_recipes(tmp_path)
    for devices, settings in ((1, ()), (2, ("distribution.kind=data_parallel",))):
        done = run_commands(tmp_path, devices, settings)
        assert done.returncode == 0, f"{devices} device(s):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    for command in COMMANDS:
        one, two = (tmp_path / command / "1", tmp_path / command / "2")
        trained = [weights_of(command, run) for run in (one, two)]
        assert largest_difference(*map(without_key_biases, trained)) <= 5e-6, command
        results = [json.loads((folder / "results.json").read_text()) for folder in (one, two)]
        np.testing.assert_allclose(results[1]["history"]["loss"], results[0]["history"]["loss"], rtol=1e-5,
                                   err_msg=command)
        if command == "pretrain":  # six steps moved the weights well beyond the tolerance
            initial = preset_weights(one / "snapshots" / "step_0")
            assert largest_difference(trained[0], initial) > 1e-3
        else:
            assert results[1]["metrics"] == results[0]["metrics"], command


def test_a_batch_that_does_not_split_over_the_replicas_is_refused(tmp_path):
    done = run_commands(write_recipes(tmp_path), 2, ("distribution.kind=data_parallel", "pretrain.batch_size=7"))
    assert done.returncode != 0
    assert "pretrain.batch_size=7 does not split over the 2 devices of tf.distribute.MirroredStrategy" in done.stderr


def test_a_tf_config_cluster_is_refused_with_the_reason(monkeypatch):
    from keras_bat.training.distribution import setup_distribution

    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    with pytest.raises(ValueError, match="MultiWorkerMirroredStrategy, which Keras 3's model.fit does not run"):
        setup_distribution({"kind": "data_parallel"})


def test_model_parallel_is_refused_on_tensorflow():
    from keras_bat.training.distribution import setup_distribution

    with pytest.raises(ValueError, match="model_parallel is keras.distribution's"):
        setup_distribution({"kind": "model_parallel"})
