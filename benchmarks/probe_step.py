"""Times one CGP probing step (frozen ViT-B, batch 2 x 1024 frames, 10000 prototypes).

Each backend runs in its own process (KERAS_BACKEND is read at import); the
median step time after warm-up is printed and written as JSON.

    python benchmarks/probe_step.py --backends tensorflow jax torch --steps 5
"""

import json

from common import benchmark_parser, encoder_gflop, parse_jit, run, time_steps


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


def run_baseline(args):
    from plain_torch import probe_step

    if args.preset != "bat_base":
        raise SystemExit("the plain-PyTorch baseline is ViT-B (bat_base)")
    step = probe_step(args.batch, args.frames, args.prototypes, args.classes)
    return step, "plain PyTorch ViT-B + CGP probe, AdamW (benchmarks/plain_torch.py)"


def main():
    parser = benchmark_parser(__doc__.split("\n\n")[0], "probe_step", ["auto"])
    parser.add_argument("--preset", default="bat_base")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--prototypes", type=int, default=10000)
    parser.add_argument("--classes", type=int, default=527)
    args = parser.parse_args()
    patches = args.frames // 16 * 8
    dim, depth = {"bat_small": (384, 12), "bat_base": (768, 12), "bat_large": (1024, 24)}[args.preset]
    # Frozen encoder forward; CGP similarities forward and backward (x3), over 1 + chunks of 512 patches.
    gflop = (encoder_gflop(args.batch, patches + 1, dim, depth)
             + 3 * 2 * args.batch * patches * args.prototypes * dim / 1e9)
    run(__file__, args, ("preset", "batch", "frames", "prototypes", "classes", "warmup", "steps"), run_child,
        f"CGP probe step: {args.preset}, batch {args.batch} x {args.frames} frames, {args.prototypes} "
        f"prototypes, {args.classes} classes", gflop, run_baseline)


if __name__ == "__main__":
    main()
