"""Writes the saved models that tests/test_saved_models.py loads: `.keras` files and
presets of small task models, with the outputs they gave when written.

The files in this folder were written by keras-bat 0.1.0 as it stood before the encoder
families moved into their own folders (`keras_bat/models/bat/`, `keras_bat/models/beats/`);
the test checks that files saved then still load and give the same outputs. Their presets
hold the encoder's weights under the official names (`model.safetensors`), as presets did
then. The `<name>_native_preset` folders hold the same models in the preset layout that
came next, the encoder's Keras weights (`model.weights.h5`): `--native` wrote them by
loading each earlier preset and saving it again, so `outputs.npz` serves both. Run
`python tests/saved_models/make_saved_models.py [--native]` only to add new files:
rewriting the existing ones would test nothing.
"""

import os
import sys

import keras
import numpy as np

from keras_bat.heads import CGP, LinearHead, VQTHead
from keras_bat.layers import KaldiFbank, LogMelSpectrogram
from keras_bat.models import AudioClassifier, BATBackbone, BEATsBackbone

FOLDER = os.path.dirname(os.path.abspath(__file__))
SAMPLES = 16000  # one second at 16 kHz


def task_models():
    """name -> AudioClassifier, one per encoder family and head kind."""
    bat = BATBackbone(dim=32, depth=2, num_heads=2, chunk_time_patches=4)
    beats = BEATsBackbone(dim=32, depth=2, num_heads=2, ffn_dim=64, embed_dim=16, chunk_time_patches=4,
                          conv_pos=8, conv_pos_groups=2, num_buckets=16, max_distance=32)
    eat = BATBackbone(dim=32, depth=2, num_heads=2, chunk_time_patches=4, use_gate=False, frontend="eat")
    vqt_bat = BATBackbone(dim=32, depth=2, num_heads=2, chunk_time_patches=4, num_query_tokens=3)
    return {
        "bat_cgp": AudioClassifier(bat, CGP(5, num_prototypes=20), frontend=LogMelSpectrogram(time_frames=96),
                                   label_names=list("abcde")),
        "beats_linear": AudioClassifier(beats, LinearHead(4, pooling="mean", use_norm=True),
                                        frontend=KaldiFbank.for_encoder("beats", "esc50", time_frames=96)),
        "eat_linear": AudioClassifier(eat, LinearHead(3), frontend=KaldiFbank.for_encoder("eat", time_frames=96)),
        "bat_vqt": AudioClassifier(vqt_bat, VQTHead(3, depth=2, dim=32, num_query_tokens=3),
                                   frontend=LogMelSpectrogram(time_frames=96)),
    }


def write_native_presets():
    """`<name>_native_preset`: each earlier task preset, loaded and saved in today's layout."""
    for name in task_models():
        target = os.path.join(FOLDER, f"{name}_native_preset")
        if os.path.exists(target):
            sys.exit(f"{target} exists: the saved models are kept as they were written.")
        AudioClassifier.from_preset(os.path.join(FOLDER, f"{name}_preset")).save_to_preset(target)


def main():
    if sys.argv[1:] == ["--native"]:
        return write_native_presets()
    keras.utils.set_random_seed(7)
    waveforms = np.random.default_rng(7).normal(0, 0.1, (2, SAMPLES)).astype("float32")
    expected = {"waveforms": waveforms}
    for name, model in task_models().items():
        if os.path.exists(os.path.join(FOLDER, f"{name}.keras")):
            sys.exit(f"{name}.keras exists: the saved models are kept as they were written.")
        expected[name] = keras.ops.convert_to_numpy(model(waveforms))
        model.save(os.path.join(FOLDER, f"{name}.keras"))
        model.save_to_preset(os.path.join(FOLDER, f"{name}_preset"))
    np.savez(os.path.join(FOLDER, "outputs.npz"), **expected)


if __name__ == "__main__":
    main()
