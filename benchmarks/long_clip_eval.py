"""Evaluation of long clips in bounded memory: peak resident memory and wall
time of a probe's evaluation forward pass against the clip length, for the
streamed path the recipes use (`AudioClassifier.predict_long`: one time chunk
of every clip at a time, the head keeping only what it pools) and, as the
baseline, the whole-clip pass (`model.predict_on_batch`, all chunks and all
blocks' tokens of a batch at once).

Each (length, path) runs in a process of its own on random clips through
`bat_base` (random weights: memory and time do not depend on them) and a CGP
head with 10000 prototypes; the process reports its own peak resident memory
(`ru_maxrss`). The two paths' outputs are compared on the first batch.

    python benchmarks/long_clip_eval.py --seconds 10.24 30.72 61.44 122.88 --backend tensorflow
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def child(args):
    import resource
    import warnings

    import keras

    from keras_bat.heads import CGP
    from keras_bat.models import AudioClassifier, BATBackbone

    keras.utils.set_random_seed(0)
    warnings.simplefilter("ignore")  # the preset's random weights are intended here
    backbone = BATBackbone.from_preset(args.backbone)
    samples = int(round(args.child_seconds * 16000))
    frontend = backbone.make_frontend(time_frames=int(round(args.child_seconds * 100)))
    model = AudioClassifier(backbone, CGP(20, 10000), frontend=frontend, task="multilabel")
    rng = np.random.default_rng(0)
    outputs, start = [], time.perf_counter()
    for _ in range(args.clips // args.batch_size):
        waveforms = 0.1 * rng.standard_normal((args.batch_size, samples)).astype("float32")
        if args.child_path == "streamed":
            outputs.append(model.predict_long(waveforms))
        else:
            outputs.append(keras.ops.convert_to_numpy(model.predict_on_batch(waveforms)))
    seconds = time.perf_counter() - start
    np.save(args.child_output, outputs[0])
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"wall_s": seconds, "peak_rss_gb": peak_kb / 2**20}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.24, 30.72, 61.44, 122.88])
    parser.add_argument("--backend", default="tensorflow")
    parser.add_argument("--backbone", default="bat_base")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--paths", nargs="+", default=["whole", "streamed"], choices=["whole", "streamed"])
    parser.add_argument("--workdir", default="benchmarks/results/long_clip_eval")
    parser.add_argument("--child-seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--child-path", help=argparse.SUPPRESS)
    parser.add_argument("--child-output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_path:
        return child(args)

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for seconds in args.seconds:
        row = {"clip_seconds": seconds, "clips": args.clips, "batch_size": args.batch_size}
        for path in args.paths:
            output = workdir / f"{path}_{seconds}.npy"
            command = [sys.executable, __file__, "--child-seconds", str(seconds), "--child-path", path,
                       "--child-output", str(output), "--clips", str(args.clips), "--batch-size",
                       str(args.batch_size), "--backbone", args.backbone]
            result = subprocess.run(command, capture_output=True, text=True,
                                    env={**os.environ, "KERAS_BACKEND": args.backend})
            if result.returncode != 0:
                row[path] = {"failed": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else
                             f"exit status {result.returncode}"}
                print(f"{seconds:7.2f} s clips, {path}: failed ({row[path]['failed']})", flush=True)
                continue
            row[path] = {k: round(v, 2) for k, v in json.loads(result.stdout.strip().splitlines()[-1]).items()}
            print(f"{seconds:7.2f} s clips, {path:8s}: {row[path]['wall_s']:7.1f} s wall, "
                  f"peak RSS {row[path]['peak_rss_gb']:.2f} GB", flush=True)
        if all(isinstance(row.get(p), dict) and "wall_s" in row[p] for p in ("whole", "streamed")):
            whole, streamed = (np.load(workdir / f"{path}_{seconds}.npy") for path in ("whole", "streamed"))
            difference = np.abs(whole - streamed)
            row["max_abs_difference"] = float(difference.max())
            print(f"{seconds:7.2f} s clips: outputs differ by at most {difference.max():.2e}", flush=True)
        rows.append(row)
    (workdir / "results.json").write_text(json.dumps({"backend": args.backend, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
