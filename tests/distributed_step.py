"""One pretraining step on one device and under keras.distribution (run as a
script with several virtual CPU devices; prints the largest weight differences
as JSON)."""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_bat.models import BATPretrainer  # noqa: E402
from keras_bat.training.distribution import make_distribution, setup_distribution  # noqa: E402


def one_step(initial_weights, spectrograms, distribution=None):
    keras.distribution.set_distribution(distribution)
    pretrainer = BATPretrainer(encoder={"dim": 32, "depth": 2, "num_heads": 2}, decoder_depth=1, decoder_heads=2,
                               time_frames=64, num_views=2, seed=3)
    pretrainer.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.05))
    pretrainer(spectrograms[:1])  # builds the weights
    if initial_weights is not None:
        pretrainer.set_weights(initial_weights)
    before = [np.array(w) for w in pretrainer.get_weights()]
    pretrainer.train_on_batch(spectrograms)
    return before, [np.array(w) for w in pretrainer.get_weights()], pretrainer


def main():
    assert len(keras.distribution.list_devices()) == 4, keras.distribution.list_devices()
    spectrograms = np.random.default_rng(0).uniform(size=(8, 64, 128)).astype("float32")
    initial, single, _ = one_step(None, spectrograms)
    report = {}
    for kind in sys.argv[1:] or ["data_parallel", "model_parallel"]:
        _, distributed, model = one_step(initial, spectrograms, make_distribution(kind, model_parallel=2))
        # Each variable's partition spec (the mesh axis, or None, of each dimension), None when replicated.
        specs = [None if v.value.sharding.is_fully_replicated else
                 list(v.value.sharding.spec) + [None] * (len(v.shape) - len(v.value.sharding.spec))
                 for v in model.weights]
        report[kind] = {"max_weight_difference": max(float(np.max(np.abs(a - b))) for a, b in zip(single, distributed)),
                        "max_update": max(float(np.max(np.abs(a - b))) for a, b in zip(single, initial)),
                        "variables": [[v.path, spec] for v, spec in zip(model.weights, specs)]}
    try:  # 6 examples do not split over 4 devices
        setup_distribution({"kind": "data_parallel"}, {"train.batch_size": 6})
        report["refused_batch"] = None
    except ValueError as error:
        report["refused_batch"] = str(error)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
