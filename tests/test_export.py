"""Exported models (SavedModel, ONNX, LiteRT) reloaded without Keras match the Keras models."""

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

# Runs in a process that must not import Keras: TensorFlow (with Keras made unimportable), onnxruntime
# or the LiteRT interpreter (which needs no TensorFlow either).
CHECK = """
import json, sys
import numpy as np
path, format, inputs = sys.argv[1], sys.argv[2], np.load(sys.argv[3])
if format == "litert":
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(path)
    runner = interpreter.get_signature_runner()
    run = lambda x: runner(waveforms=x)
elif format == "onnx":
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
if format == "litert":
    flatbuffer = schema.Model.GetRootAs(open(path, "rb").read())
    entries = [flatbuffer.Metadata(i) for i in range(flatbuffer.MetadataLength())]
    labels = next((flatbuffer.Buffers(e.Buffer()).DataAsNumpy().tobytes().decode() for e in entries
                   if e.Name() == b"label_names"), None)
    assert "tensorflow" not in sys.modules
elif format == "onnx":
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


def require_exporter(format):
    modules = {"onnx": ("onnxruntime", "tf2onnx"), "litert": ("ai_edge_litert",)}.get(format, ())
    for module in modules:
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
CASES = {"tensorflow": [("demo", "saved_model"), ("demo", "onnx"), ("probe", "saved_model"), ("probe", "onnx"),
                        ("probe", "litert")],
         "jax": [("probe", "saved_model"), ("probe", "litert")], "torch": [("demo", "onnx")]}


@pytest.mark.parametrize("model_name, format", CASES[keras.backend.backend()])
@pytest.mark.long
def test_export_reloads_without_keras_and_matches(model_name, format, tmp_path):
    require_exporter(format)
    model = demo_embedder() if model_name == "demo" else probe_classifier()
    waveforms = np.random.default_rng(0).uniform(-1, 1, size=(2, 30000)).astype("float32")
    expected = model(waveforms)
    expected = {k: to_numpy(v) for k, v in expected.items()} if isinstance(expected, dict) else to_numpy(expected)
    path = tmp_path / {"onnx": "model.onnx", "litert": "model.tflite"}.get(format, "saved_model")
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
    with pytest.raises(ValueError, match="ends in .tflite"):
        export_model(probe_classifier(), tmp_path / "m", "litert")
    with pytest.raises(ValueError, match="is LiteRT's"):
        export_model(probe_classifier(), tmp_path / "m.onnx", "onnx", quantize="int8")
    if keras.backend.backend() == "tensorflow":  # elsewhere the same error comes from the exporting process
        eat = BATBackbone(dim=32, depth=2, num_heads=4, use_gate=False, frontend="eat")
        with pytest.raises(ValueError, match="KaldiFbank frames a known number of samples"):
            export_model(AudioEmbedder(eat, eat.make_frontend(time_frames=128)), tmp_path / "m", "saved_model")


def tensor_types(path):
    """The element types of the LiteRT file's tensors."""
    from ai_edge_litert import schema_py_generated as schema

    flatbuffer = schema.Model.GetRootAs(open(path, "rb").read())
    names = {value: name for name, value in vars(schema.TensorType).items() if not name.startswith("_")}
    graph = flatbuffer.Subgraphs(0)
    return {names[graph.Tensors(i).Type()] for i in range(graph.TensorsLength())}


@pytest.mark.skipif(keras.backend.backend() == "jax", reason="the TensorFlow pass exports directly, torch's through "
                                                              "a TensorFlow process (JAX's float export is above)")
@pytest.mark.long
def test_the_command_exports_a_task_preset_to_int8_litert_with_its_label_names(tmp_path):
    require_exporter("litert")
    from keras_bat.cli import run

    model = probe_classifier()
    model.save_to_preset(tmp_path / "preset")
    waveforms = np.random.default_rng(1).uniform(-1, 1, size=(2, 20000)).astype("float32")
    expected = to_numpy(model(waveforms))
    for name, quantize in (("float", []), ("int8", ["--quantize", "int8"])):
        assert run(["export", str(tmp_path / "preset"), str(tmp_path / f"{name}.tflite"), "--format", "litert",
                    *quantize]) == 0
    float_types, int8_types = tensor_types(tmp_path / "float.tflite"), tensor_types(tmp_path / "int8.tflite")
    assert "INT8" in int8_types and "INT8" not in float_types  # the weights are stored as int8
    for name, tolerance in (("float", 1e-4), ("int8", 0.05)):  # int8 with a quantized frontend: 0.18
        result = exported_outputs(tmp_path / f"{name}.tflite", "litert", waveforms, tmp_path)
        assert result["label_names"] == ["dog", "rain", "siren"]
        logits = np.asarray(result["outputs"]["logits"])
        np.testing.assert_allclose(logits, expected, atol=tolerance * np.abs(expected).max())
    assert read_label_names(tmp_path / "int8.tflite") == ["dog", "rain", "siren"]
