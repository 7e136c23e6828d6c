"""Exported models (SavedModel, ONNX) reloaded without Keras match the Keras models."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import IN_CI, to_numpy

from keras_bat import AudioClassifier, BATBackbone, LogMelSpectrogram
from keras_bat.export import export_model, read_label_names
from keras_bat.heads import CGP
from keras_bat.models import AudioEmbedder
from keras_bat.workflows.config import load_config

# Runs in a process that must not import Keras: TensorFlow (with Keras made unimportable) or onnxruntime.
CHECK = """
import json, sys
import numpy as np
path, format, inputs = sys.argv[1], sys.argv[2], np.load(sys.argv[3])
if format == "onnx":
    import onnxruntime
    session = onnxruntime.InferenceSession(path)
    names = [o.name for o in session.get_outputs()]
    run = lambda x: dict(zip(names, session.run(None, {session.get_inputs()[0].name: x})))
else:
    sys.modules["keras"] = None  # TensorFlow alone
    import tensorflow as tf
    serve = tf.saved_model.load(path).signatures["serving_default"]
    run = lambda x: {k: v.numpy() for k, v in serve(waveforms=tf.constant(x)).items()}
outputs = run(inputs["waveforms"])
longer = run(np.tile(inputs["waveforms"], (2, 3)))  # another batch size and length
if format == "onnx":
    labels = session.get_modelmeta().custom_metadata_map.get("label_names")
else:
    import os
    file = os.path.join(path, "assets.extra", "label_names.json")
    labels = open(file).read() if os.path.exists(file) else None
assert "keras" not in [m for m in sys.modules if sys.modules[m] is not None]
print(json.dumps({"outputs": {k: v.tolist() for k, v in outputs.items()},
                  "longer": {k: list(v.shape) for k, v in longer.items()},
                  "label_names": labels and json.loads(labels)}))
"""


def exported_outputs(path, format, waveforms, tmp_path):
    np.savez(tmp_path / "inputs.npz", waveforms=waveforms)
    result = subprocess.run([sys.executable, "-c", CHECK, str(path), format, str(tmp_path / "inputs.npz")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def require_onnx(format):
    if format != "onnx":
        return
    for module in ("onnxruntime", "tf2onnx"):
        try:
            __import__(module)
        except ImportError:
            if IN_CI:
                pytest.fail(f"{module} is not installed")
            pytest.skip(f"{module} is not installed (pip install -e '.[export]')")


def demo_embedder():
    """The demo's encoder (random weights) with a 2.56 s frontend."""
    config = load_config(None)["model"]
    backbone = BATBackbone(**config["backbone"])
    return AudioEmbedder(backbone, frontend=backbone.make_frontend(time_frames=config["time_frames"]))


def probe_classifier():
    return AudioClassifier(BATBackbone(dim=32, depth=2, num_heads=4), CGP(3, 16),
                           frontend=LogMelSpectrogram(time_frames=128), label_names=["dog", "rain", "siren"])


# Under TensorFlow every combination; under JAX and torch (exported by a TensorFlow process from
# a .keras file) one each.
CASES = {"tensorflow": [("demo", "saved_model"), ("demo", "onnx"), ("probe", "saved_model"), ("probe", "onnx")],
         "jax": [("probe", "saved_model")], "torch": [("demo", "onnx")]}


@pytest.mark.parametrize("model_name, format", CASES[keras.backend.backend()])
def test_export_reloads_without_keras_and_matches(model_name, format, tmp_path):
    require_onnx(format)
    model = demo_embedder() if model_name == "demo" else probe_classifier()
    waveforms = np.random.default_rng(0).uniform(-1, 1, size=(2, 30000)).astype("float32")
    expected = model(waveforms)
    expected = {k: to_numpy(v) for k, v in expected.items()} if isinstance(expected, dict) else to_numpy(expected)
    path = tmp_path / ("model.onnx" if format == "onnx" else "saved_model")
    export_model(model, path, format)
    result = exported_outputs(path, format, waveforms, tmp_path)
    outputs = {k: np.asarray(v) for k, v in result["outputs"].items()}
    if isinstance(expected, dict):
        for key, value in expected.items():
            np.testing.assert_allclose(outputs[key], value, atol=1e-4)
        assert result["longer"]["timestamp_embeddings"][0] == 4
        assert result["label_names"] is None
    else:
        assert set(outputs) == {"logits"} and result["label_names"] == ["dog", "rain", "siren"]
        np.testing.assert_allclose(outputs["logits"], expected, atol=1e-4)
        assert result["longer"] == {"logits": [4, 3]}
        assert read_label_names(path) == ["dog", "rain", "siren"]


def test_export_refuses_what_it_cannot_serve(tmp_path):
    backbone = BATBackbone(dim=32, depth=2, num_heads=4)
    with pytest.raises(ValueError, match="time_frames"):
        export_model(AudioEmbedder(backbone), tmp_path / "m", "saved_model")
    with pytest.raises(ValueError, match="no frontend"):
        export_model(AudioClassifier(backbone, CGP(3, 4)), tmp_path / "m", "saved_model")
    with pytest.raises(ValueError, match="format"):
        export_model(probe_classifier(), tmp_path / "m", "tflite")
    if keras.backend.backend() == "tensorflow":  # elsewhere the same error comes from the exporting process
        eat = BATBackbone(dim=32, depth=2, num_heads=4, use_gate=False, frontend="eat")
        with pytest.raises(ValueError, match="KaldiFbank frames a known number of samples"):
            export_model(AudioEmbedder(eat, eat.make_frontend(time_frames=128)), tmp_path / "m", "saved_model")
