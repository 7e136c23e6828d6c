"""Models saved by earlier versions of keras-bat load and give the outputs they gave then.

The `.keras` files and presets in tests/saved_models/ were written before the encoder
families moved into their own folders (see make_saved_models.py there); moving code must
not orphan a user's saved model. Their presets hold the encoder under the official names
(`model.safetensors`, read by the family's converter); the `_native_preset` folders hold
the same models in Keras' weights layout (`model.weights.h5`, read with no converter).
"""

import os

import keras
import numpy as np
import pytest

from keras_bat.models import AudioClassifier, BATBackbone, BEATsBackbone
from keras_bat.models.presets import backbone_from_source

FOLDER = os.path.join(os.path.dirname(__file__), "saved_models")
EXPECTED = dict(np.load(os.path.join(FOLDER, "outputs.npz")))
NAMES = ("bat_cgp", "beats_linear", "eat_linear", "bat_vqt")
BACKBONE_CLASSES = {"bat_cgp": BATBackbone, "beats_linear": BEATsBackbone, "eat_linear": BATBackbone,
                    "bat_vqt": BATBackbone}


def outputs(model):
    return keras.ops.convert_to_numpy(model(EXPECTED["waveforms"]))


@pytest.mark.parametrize("name", NAMES)
def test_saved_keras_file_loads_with_its_outputs(name):
    model = keras.saving.load_model(os.path.join(FOLDER, f"{name}.keras"), compile=False)
    assert isinstance(model, AudioClassifier)
    np.testing.assert_allclose(outputs(model), EXPECTED[name], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layout", ["preset", "native_preset"])
@pytest.mark.parametrize("name", NAMES)
def test_saved_task_preset_loads_with_its_outputs_and_backbone(name, layout):
    folder = os.path.join(FOLDER, f"{name}_{layout}")
    model = AudioClassifier.from_preset(folder)
    np.testing.assert_allclose(outputs(model), EXPECTED[name], rtol=1e-4, atol=1e-4)
    if name == "bat_cgp":
        assert model.label_names == list("abcde")
    # The backbone preset beside it: the same encoder, found by its config alone.
    backbone = backbone_from_source(folder)
    assert type(backbone) is BACKBONE_CLASSES[name]
    assert backbone.get_config() == {**model.backbone.get_config(), "name": backbone.name, "trainable": True}
    spectrogram = model.frontend(EXPECTED["waveforms"])
    inputs = spectrogram if not backbone.num_query_tokens else {
        "spectrogram": keras.ops.convert_to_tensor(spectrogram), "query_tokens": model.head.batch_query_tokens(2)}
    for key, value in backbone(inputs).items():
        np.testing.assert_allclose(keras.ops.convert_to_numpy(value),
                                   keras.ops.convert_to_numpy(model.backbone(inputs)[key]), rtol=1e-5, atol=1e-5)
