"""Models for serving: a TensorFlow SavedModel, an ONNX file or a LiteRT (TensorFlow Lite) file, frontend inside.

    from keras_bat.export import export_model
    export_model(classifier, "probe_savedmodel")               # waveforms -> logits
    export_model(AudioEmbedder(backbone, backbone.make_frontend(time_frames=1024)), "bat.onnx", "onnx")
    export_model(classifier, "probe.tflite", "litert", quantize="int8")

All take float32 waveforms `(batch, samples)` at 16 kHz, any batch size and
any length (cut or zero-padded to the frontend's `time_frames`, as in
training), and need nothing of keras-bat or Keras to run: TensorFlow (`serve`
signature, input `waveforms`), onnxruntime, or the LiteRT interpreter
(`ai_edge_litert`, its default signature). Keras' exporters do the work
(`model.export`: the SavedModel directly, ONNX through tf2onnx, LiteRT through
the TensorFlow Lite converter), on the TensorFlow backend; under JAX or torch
the model is saved as a `.keras` file and exported by a TensorFlow-backend
process. In the ONNX graph the spectra are products with a DFT matrix (see
`keras_bat.ops.portable_spectra`); LiteRT has the FFT as a built-in op.

`quantize="int8"` (LiteRT only) is the converter's dynamic-range
quantization: weights stored as int8 (a quarter of the size), activations
quantized on the fly inside each matrix product. Keras' own int8 layers
(`model.quantize("int8")`) do not convert: the converter has no fully
connected op for int8 inputs.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile

import keras

from keras_bat.errors import UsageError

FORMATS = {"saved_model": "tf_saved_model", "onnx": "onnx", "litert": "litert"}
QUANTIZATIONS = ("int8",)


def export_model(model, path, format="saved_model", quantize=None):
    """Writes `model` (waveforms -> outputs) for serving.

    Args:
        model: an `AudioClassifier` with a frontend (logits out) or an
            `AudioEmbedder` (`scene_embeddings` and `timestamp_embeddings`
            out), in float32; its frontend must fix `time_frames`.
        path: the SavedModel directory or the `.onnx` file to write.
        format: `"saved_model"`, `"onnx"` or `"litert"` (a `.tflite` file).
            Defaults to `"saved_model"`.
        quantize: `None` (float32) or `"int8"` (LiteRT's int8 weights).

    Returns:
        `path`.
    """
    if format not in FORMATS:
        raise UsageError(f"`format` must be one of {sorted(FORMATS)}. Received: {format!r}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise UsageError(f"`quantize` must be None or one of {QUANTIZATIONS}. Received: {quantize!r}")
    if quantize is not None and format != "litert":
        raise UsageError(f"quantize={quantize!r} is LiteRT's (format='litert'). A Keras model quantized with "
                         "model.quantize('int8') is saved as a .keras file.")
    if format == "litert" and not os.fspath(path).endswith(".tflite"):
        raise UsageError(f"A LiteRT model is one file whose name ends in .tflite. Received: {os.fspath(path)!r}")
    frontend = getattr(model, "frontend", None)
    if frontend is None:
        raise UsageError(f"Only models that take waveforms can be exported: this {type(model).__name__} has no "
                         "frontend.")
    if getattr(frontend, "time_frames", None) is None:
        raise UsageError("The exported model takes clips of any length and cuts or pads them to the frontend's "
                         "`time_frames`: build the frontend with it, e.g. `backbone.make_frontend(time_frames=1024)`.")
    # One call builds a model loaded from a file (weights are made on the first call) and shows
    # whether its output is already named.
    example = keras.ops.zeros((1, frontend.sample_rate), "float32")
    named_outputs = isinstance(model(example), dict)
    if keras.backend.backend() != "tensorflow":
        return _export_in_tensorflow_process(model, path, format, quantize)
    from keras_bat.ops.frontend import float_filter_banks, portable_spectra

    label_names = getattr(model, "label_names", None)
    if not named_outputs:
        model = NamedLogits(model)  # an output named `logits`, not `output_0`
        model(example)  # built, as the exporter requires
    signature = [keras.InputSpec(shape=(None, None), dtype="float32", name="waveforms")]
    options = {}
    if quantize == "int8":
        import tensorflow as tf

        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
    # (The frontend stays float in a quantized file: see `float_filter_banks`.)
    context = portable_spectra if format == "onnx" else float_filter_banks if quantize else contextlib.nullcontext
    with context():
        model.export(os.fspath(path), format=FORMATS[format], input_signature=signature, verbose=False, **options)
    if label_names:
        write_label_names(path, format, label_names)
    return path


class NamedLogits(keras.Model):
    """A classifier's logits as the output `logits`, for the exported signature."""

    def __init__(self, classifier, **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier

    def call(self, waveforms):
        return {"logits": self.classifier(waveforms)}


LABEL_NAMES_KEY = "label_names"
LABEL_NAMES_FILE = os.path.join("assets.extra", "label_names.json")


def write_label_names(path, format, label_names):
    """Stores the class names with the exported file: in the ONNX model's metadata
    (`label_names`, a JSON list: `session.get_modelmeta().custom_metadata_map`), in the
    LiteRT flatbuffer's metadata (an entry `label_names`, a UTF-8 JSON list), or as
    `assets.extra/label_names.json` in the SavedModel folder."""
    text = json.dumps(list(label_names))
    if format == "litert":
        from tensorflow.lite.python import schema_py_generated as schema
        from tensorflow.lite.tools import flatbuffer_utils

        exported = flatbuffer_utils.read_model(os.fspath(path))
        buffer = schema.BufferT()
        buffer.data = list(text.encode())
        exported.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = LABEL_NAMES_KEY, len(exported.buffers) - 1
        exported.metadata = [*(exported.metadata or []), entry]
        flatbuffer_utils.write_model(exported, os.fspath(path))
    elif format == "onnx":
        import onnx

        exported = onnx.load(os.fspath(path))
        entry = exported.metadata_props.add()
        entry.key, entry.value = LABEL_NAMES_KEY, text
        onnx.save(exported, os.fspath(path))
    else:
        os.makedirs(os.path.join(path, "assets.extra"), exist_ok=True)
        with open(os.path.join(path, LABEL_NAMES_FILE), "w") as f:
            f.write(text)


def read_label_names(path):
    """The class names stored with an exported file by `write_label_names`, or `None`."""
    if os.fspath(path).endswith(".tflite"):
        from tensorflow.lite.tools import flatbuffer_utils

        exported = flatbuffer_utils.read_model(os.fspath(path))
        for entry in exported.metadata or []:
            if entry.name.decode() == LABEL_NAMES_KEY:
                return json.loads(bytes(exported.buffers[entry.buffer].data).decode())
        return None
    if os.fspath(path).endswith(".onnx"):
        import onnx

        metadata = {entry.key: entry.value for entry in onnx.load(os.fspath(path)).metadata_props}
        return json.loads(metadata[LABEL_NAMES_KEY]) if LABEL_NAMES_KEY in metadata else None
    file = os.path.join(path, LABEL_NAMES_FILE)
    if not os.path.isfile(file):
        return None
    with open(file) as f:
        return json.load(f)


def _export_in_tensorflow_process(model, path, format, quantize=None):
    with tempfile.TemporaryDirectory() as folder:
        saved = os.path.join(folder, "model.keras")
        model.save(saved)
        environment = {**os.environ, "KERAS_BACKEND": "tensorflow"}
        command = [sys.executable, "-m", "keras_bat.export", saved, os.fspath(path), "--format", format]
        if quantize is not None:
            command += ["--quantize", quantize]
        result = subprocess.run(command, env=environment, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"Exporting under the TensorFlow backend failed:\n{result.stderr[-4000:]}")
    return path


def export_file(source, path, format="saved_model", time_frames=None, quantize=None):
    """Exports a `.keras` file or preset directory: an `AudioClassifier` (its
    `save_to_preset` directory or `.keras` file), an `AudioEmbedder`, or a
    backbone (exported as an `AudioEmbedder` whose frontend cuts or pads
    clips to `time_frames`, which a backbone must be given: an exported model
    takes a fixed number of frames, and nothing is cropped unasked).
    `format="official"` writes the encoder's weights (a task model's backbone)
    under the official names instead, a `.safetensors` file for the authors'
    PyTorch code (`EncoderModel.export_official`)."""
    from keras_bat.models import AudioEmbedder
    from keras_bat.models.presets import load_model_source

    model = load_model_source(source)
    if format == "official":
        if quantize is not None or time_frames is not None:
            raise UsageError("format='official' writes the encoder's float weights: it takes no quantize or "
                             "time_frames.")
        encoder = model if hasattr(model, "export_official") else getattr(model, "backbone", None)
        if encoder is None:
            raise UsageError(f"{source} holds no encoder to write under the official names.")
        return encoder.export_official(path)
    if hasattr(model, "make_frontend"):  # a backbone: export its embeddings
        if time_frames is None:
            chunk = model.chunk_time_patches * model.patch_size
            raise UsageError(f"{source} is an encoder: give the clip length its export takes, --time-frames N "
                             f"(100 frames a second; clips are cut or zero-padded to it, and encoded in chunks of "
                             f"{chunk} frames).")
        model = AudioEmbedder(model, frontend=model.make_frontend(time_frames=time_frames))
    return export_model(model, path, format, quantize)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Export a .keras file or preset directory for serving.")
    parser.add_argument("source")
    parser.add_argument("path")
    parser.add_argument("--format", choices=sorted(FORMATS) + ["official"], default="saved_model")
    parser.add_argument("--time-frames", type=int)
    parser.add_argument("--quantize", choices=QUANTIZATIONS)
    args = parser.parse_args(argv)
    export_file(args.source, args.path, args.format, args.time_frames, args.quantize)
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
