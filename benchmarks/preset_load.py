"""Loading an encoder preset: Keras' weights file (what `save_to_preset` writes) against the
earlier layout, the official names read through the family's converter; with each file's size,
and the size of an int8-quantized preset.

    python benchmarks/preset_load.py [--preset bat_base] [--repeats 3] [--output preset_load.json]

Each layout is written once, from the same randomly initialised encoder, and loaded `--repeats`
times in this process (the median is reported); the loaded weights are checked equal to the
saved ones.
"""

import argparse
import json
import os
import statistics
import tempfile
import time

import keras
import numpy as np

from keras_bat.models import EncoderModel


def folder_bytes(folder):
    return sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))


def median_load_seconds(folder, repeats):
    times, model = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        model = EncoderModel.from_preset(folder)
        times.append(time.perf_counter() - start)
    return statistics.median(times), model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="bat_base")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    encoder = EncoderModel.from_preset(args.preset, load_weights=False)
    saved = [keras.ops.convert_to_numpy(v) for v in encoder.weights]
    with tempfile.TemporaryDirectory() as root:
        native, earlier, quantized = (os.path.join(root, name) for name in ("native", "earlier", "int8"))
        encoder.save_to_preset(native)
        encoder.save_to_preset(earlier)  # then the earlier layout: the config, the official names
        os.remove(os.path.join(earlier, "model.weights.h5"))
        encoder.export_official(earlier)
        rows = {}
        for name, folder in (("keras weights (model.weights.h5)", native),
                             ("official names, converter (model.safetensors)", earlier)):
            seconds, loaded = median_load_seconds(folder, args.repeats)
            assert all(np.array_equal(a, keras.ops.convert_to_numpy(b)) for a, b in zip(saved, loaded.weights)), name
            rows[name] = {"load_s": seconds, "bytes": folder_bytes(folder)}
        encoder.quantize("int8")
        encoder.save_to_preset(quantized)
        rows["int8 (model.weights.h5)"] = {"load_s": median_load_seconds(quantized, args.repeats)[0],
                                           "bytes": folder_bytes(quantized)}
    baseline = rows["official names, converter (model.safetensors)"]["load_s"]
    print(f"{args.preset} ({encoder.count_params() / 1e6:.1f} M parameters), backend {keras.backend.backend()}, "
          f"median of {args.repeats} loads")
    print(f"{'layout':48s} {'load s':>8s} {'vs converter':>13s} {'MB':>8s}")
    for name, row in rows.items():
        print(f"{name:48s} {row['load_s']:8.2f} {row['load_s'] / baseline:12.2f}x {row['bytes'] / 1e6:8.1f}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"preset": args.preset, "backend": keras.backend.backend(), "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
