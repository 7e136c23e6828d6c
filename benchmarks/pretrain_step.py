"""Times one BAT pretraining step (ViT-S student, 6 x 384 decoder, 2 clips x 4 views x 1024 frames).

Each backend runs in its own process, with and without jit compilation by
default; the median step time after warm-up is printed and written as JSON.

    python benchmarks/pretrain_step.py --backends tensorflow jax torch --jit true false
"""

import json

from common import benchmark_parser, encoder_gflop, parse_jit, run, time_steps


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


def run_baseline(args):
    from plain_torch import pretrain_step

    step = pretrain_step(args.dim, args.depth, args.heads, args.decoder_depth, args.frames, args.batch, args.views)
    return step, "plain PyTorch student, decoder and EMA teacher, AdamW (benchmarks/plain_torch.py)"


def main():
    parser = benchmark_parser(__doc__.split("\n\n")[0], "pretrain_step", ["true", "false"])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--decoder-depth", type=int, default=6)
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--views", type=int, default=4)
    args = parser.parse_args()
    patches = args.frames // 16 * 8
    kept = int(patches * 0.2)
    views = args.batch * args.views
    # Student and decoder forward + backward (x3), teacher forward.
    gflop = (3 * encoder_gflop(views, kept + 1, args.dim, args.depth)
             + 3 * encoder_gflop(views, patches, args.dim, args.decoder_depth)
             + encoder_gflop(args.batch, patches + 1, args.dim, args.depth))
    run(__file__, args, ("dim", "depth", "heads", "decoder_depth", "frames", "batch", "views", "warmup", "steps"),
        run_child, f"Pretraining step: student {args.dim} x {args.depth}, decoder {args.decoder_depth} x {args.dim}, "
        f"{args.batch} clips x {args.views} views x {args.frames} frames", gflop, run_baseline)


if __name__ == "__main__":
    main()
