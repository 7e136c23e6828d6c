"""What `AudioTagger` moves between host (NumPy) and device (backend tensors) while it tags one
recording: every crossing of an array of at least `--min-kb` kilobytes at Keras' API boundary
is counted, with its bytes. Device to host: `keras.ops.convert_to_numpy` and the NumPy outputs
of `predict_on_batch`; host to device: NumPy arrays given to `predict_on_batch`, to a layer's
call and to `keras.ops.convert_to_tensor`. Calls made inside a counted call are not counted
again. (The backends' own transfer logs are no help here: a CPU runtime shares host memory and
logs almost nothing.)

A task model of `--backbone` (random weights: the shapes are what matters) with a CGP head,
clip-level (`multiclass`) or frame-level (`frame`), tags a recording of `--seconds` seconds,
once to compile, then counted. Run it on two checkouts to compare them:

    python benchmarks/tag_data_flow.py --seconds 60
    PYTHONPATH=<other checkout> python benchmarks/tag_data_flow.py --seconds 60
"""

import argparse
import json
import os
import time

import numpy as np


class Crossings:
    """Counts host <-> device crossings at Keras' API boundary (see the module's docstring)."""

    def __init__(self, min_bytes):
        self.min_bytes, self.depth, self.active = min_bytes, 0, False
        self.count = {"host_to_device": 0, "device_to_host": 0}
        self.bytes = {"host_to_device": 0, "device_to_host": 0}

    def add(self, direction, values):
        import keras

        for value in keras.tree.flatten(values):
            if isinstance(value, np.ndarray) and value.nbytes >= self.min_bytes:
                self.count[direction] += 1
                self.bytes[direction] += value.nbytes

    def wrap(self, owner, name, before=None, after=None):
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            outermost = self.active and self.depth == 0
            if outermost and before:
                self.add(before, (args, kwargs))
            self.depth += 1
            try:
                result = original(*args, **kwargs)
            finally:
                self.depth -= 1
            if outermost and after:
                self.add(after, result)
            return result

        setattr(owner, name, counted)

    def install(self):
        import keras

        self.wrap(keras.Model, "predict_on_batch", "host_to_device", "device_to_host")
        self.wrap(keras.layers.Layer, "__call__", "host_to_device")
        self.wrap(keras.ops, "convert_to_tensor", "host_to_device")
        self.wrap(keras.ops, "convert_to_numpy", None, "device_to_host")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="bat_base")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--task", choices=("multiclass", "frame"), default="frame")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--min-kb", type=float, default=64.0)
    args = parser.parse_args()
    import warnings

    import keras

    import keras_bat
    from keras_bat.heads import CGP
    from keras_bat.layers import LogMelSpectrogram
    from keras_bat.models import AudioClassifier, BATBackbone
    from keras_bat.workflows.tag import AudioTagger

    keras.utils.set_random_seed(0)
    warnings.simplefilter("ignore")  # random weights are intended here
    labels = [f"class_{i}" for i in range(10)]
    model = AudioClassifier(BATBackbone.from_preset(args.backbone, load_weights=False),
                            CGP(len(labels), 1000, "frame" if args.task == "frame" else "mean"),
                            frontend=LogMelSpectrogram(time_frames=1024), task=args.task, label_names=labels)
    tagger = AudioTagger(model, batch_size=args.batch_size)
    rng = np.random.default_rng(0)
    waveform = (0.1 * rng.normal(size=int(args.seconds * 16000))).astype("float32")
    tagger(waveform, sample_rate=16000)  # compiles every call the run makes

    crossings = Crossings(args.min_kb * 1000)
    crossings.install()
    crossings.active = True
    start = time.perf_counter()
    result = tagger(waveform, sample_rate=16000)
    seconds = time.perf_counter() - start
    crossings.active = False
    print(json.dumps({
        "keras_bat": os.path.dirname(keras_bat.__file__), "backbone": args.backbone, "task": args.task,
        "seconds_of_audio": args.seconds, "wall_seconds": round(seconds, 2), "status": result["status"],
        "backend": keras.backend.backend(), "crossings": crossings.count,
        "MB": {direction: round(n / 1e6, 1) for direction, n in crossings.bytes.items()}}, indent=1))


if __name__ == "__main__":
    main()
