"""Times one CGP probing step (frozen ViT-B, batch 2 x 1024 frames, 10000 prototypes).

Each backend runs in its own process (KERAS_BACKEND is read at import); the
median step time after warm-up is printed and written as JSON.

    python benchmarks/probe_step.py --backends tensorflow jax torch --steps 5
"""

import argparse
import json

from common import parse_jit, report, run_per_backend, time_steps


def run_child(args):
    import keras
    import numpy as np

    from keras_bat import AudioClassifier, BATBackbone
    from keras_bat.heads import CGP

    model = AudioClassifier(BATBackbone.from_preset(args.preset), CGP(args.classes, args.prototypes),
                            task="multilabel")
    model.compile(jit_compile=parse_jit(args.jit))
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(args.batch, args.frames, 128)).astype("float32")
    y = (rng.uniform(size=(args.batch, args.classes)) < 0.05).astype("float32")
    timing = time_steps(lambda: model.train_on_batch(x, y), args.warmup, args.steps)
    print(json.dumps({"backend": keras.backend.backend(), "jit": parse_jit(args.jit), **timing}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"])
    parser.add_argument("--preset", default="bat_base")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--prototypes", type=int, default=10000)
    parser.add_argument("--classes", type=int, default=527)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--jit", nargs="+", default=["auto"], help="jit_compile values: auto true false")
    parser.add_argument("--output", default="benchmarks/results/probe_step.json")
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed per backend and jit mode")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.jit = args.jit[0]
        return run_child(args)
    options = {k: getattr(args, k) for k in ("preset", "batch", "frames", "prototypes", "classes", "warmup", "steps")}
    results = run_per_backend(__file__, args.backends, options, args.jit, args.timeout)
    report(f"CGP probe step: {args.preset}, batch {args.batch} x {args.frames} frames, {args.prototypes} "
           f"prototypes, {args.classes} classes", results, args.output, options)


if __name__ == "__main__":
    main()
