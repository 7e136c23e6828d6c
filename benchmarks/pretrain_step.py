"""Times one BAT pretraining step (ViT-S student, 6 x 384 decoder, 2 clips x 4 views x 1024 frames).

Each backend runs in its own process, with and without jit compilation by
default; the median step time after warm-up is printed and written as JSON.

    python benchmarks/pretrain_step.py --backends tensorflow jax torch --jit true false
"""

import argparse
import json

from common import parse_jit, report, run_per_backend, time_steps


def run_child(args):
    import keras
    import numpy as np

    from keras_bat.models import BATPretrainer

    model = BATPretrainer(encoder={"dim": args.dim, "depth": args.depth, "num_heads": args.heads},
                          decoder_depth=args.decoder_depth, decoder_heads=args.heads, time_frames=args.frames,
                          num_views=args.views, seed=0)
    model.compile(jit_compile=parse_jit(args.jit))
    x = np.random.default_rng(0).uniform(size=(args.batch, args.frames, 128)).astype("float32")
    timing = time_steps(lambda: model.train_on_batch(x), args.warmup, args.steps)
    print(json.dumps({"backend": keras.backend.backend(), "jit": parse_jit(args.jit), **timing}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--decoder-depth", type=int, default=6)
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--jit", nargs="+", default=["true", "false"], help="jit_compile values: auto true false")
    parser.add_argument("--output", default="benchmarks/results/pretrain_step.json")
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed per backend and jit mode")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.jit = args.jit[0]
        return run_child(args)
    options = {k: getattr(args, k) for k in ("dim", "depth", "heads", "decoder_depth", "frames", "batch", "views",
                                             "warmup", "steps")}
    results = run_per_backend(__file__, args.backends, options, args.jit, args.timeout)
    report(f"Pretraining step: student {args.dim} x {args.depth}, decoder {args.decoder_depth} x {args.dim}, "
           f"{args.batch} clips x {args.views} views x {args.frames} frames", results, args.output, options)


if __name__ == "__main__":
    main()
