"""Times the log-mel frontend on 32 clips of 10 s.

    python benchmarks/frontend.py --backends tensorflow jax torch
"""

import json
import math

from common import benchmark_parser, parse_jit, run, time_steps


def run_child(args):
    import keras
    import numpy as np

    from keras_bat import LogMelSpectrogram

    inputs = keras.Input((int(args.seconds * 16000),))
    model = keras.Model(inputs, LogMelSpectrogram(time_frames=int(args.seconds * 100))(inputs))
    model.compile(jit_compile=parse_jit(args.jit))
    x = np.random.default_rng(0).normal(size=(args.clips, int(args.seconds * 16000))).astype("float32")
    timing = time_steps(lambda: model.predict_on_batch(x), args.warmup, args.steps)
    print(json.dumps({"backend": keras.backend.backend(), "jit": parse_jit(args.jit), **timing}))


def run_baseline(args):
    from plain_torch import log_mel_step

    return log_mel_step(args.clips, args.seconds)


def main():
    parser = benchmark_parser(__doc__.split("\n\n")[0], "frontend", ["auto"])
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    frames = args.clips * (1 + int(args.seconds * 16000) // 160)
    # Real FFT of 1024 points (about 2.5 N log2 N) and the 513 x 128 mel projection per frame.
    gflop = frames * (2.5 * 1024 * math.log2(1024) + 2 * 513 * 128) / 1e9
    run(__file__, args, ("clips", "seconds", "warmup", "steps"), run_child,
        f"Frontend: {args.clips} clips x {args.seconds} s", gflop, run_baseline)


if __name__ == "__main__":
    main()
