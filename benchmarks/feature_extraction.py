"""Times all-layer feature extraction with a frozen ViT-B (batch 2 x 1024 frames).

    python benchmarks/feature_extraction.py --backends tensorflow jax torch
"""

import json

from common import benchmark_parser, encoder_gflop, parse_jit, run, time_steps


def run_child(args):
    import keras
    import numpy as np

    from keras_bat import BATBackbone

    backbone = BATBackbone.from_preset(args.preset)
    x = np.random.default_rng(0).uniform(size=(args.batch, args.frames, 128)).astype("float32")
    # predict_on_batch compiles the forward pass (jit) on every backend that can.
    backbone.compile(jit_compile=parse_jit(args.jit))
    timing = time_steps(lambda: backbone.predict_on_batch(x), args.warmup, args.steps)
    print(json.dumps({"backend": keras.backend.backend(), "jit": parse_jit(args.jit), **timing}))


def run_baseline(args):
    from plain_torch import features_step

    if args.preset != "bat_base":
        raise SystemExit("the plain-PyTorch baseline is ViT-B (bat_base)")
    return features_step(args.batch, args.frames), "plain PyTorch ViT-B (benchmarks/plain_torch.py)"


def main():
    parser = benchmark_parser(__doc__.split("\n\n")[0], "feature_extraction", ["auto"])
    parser.add_argument("--preset", default="bat_base")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=1024)
    args = parser.parse_args()
    dim, depth = {"bat_small": (384, 12), "bat_base": (768, 12), "bat_large": (1024, 24)}[args.preset]
    gflop = encoder_gflop(args.batch, args.frames // 16 * 8 + 1, dim, depth)
    run(__file__, args, ("preset", "batch", "frames", "warmup", "steps"), run_child,
        f"Feature extraction: {args.preset}, all blocks, batch {args.batch} x {args.frames} frames", gflop,
        run_baseline)


if __name__ == "__main__":
    main()
