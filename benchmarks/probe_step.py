"""Times one CGP probing step (frozen ViT-B, batch 2 x 1024 frames, 10000 prototypes).

Runs each backend in its own process (KERAS_BACKEND is read at import) and
prints a table; writes JSON with the median step time after warm-up.

    python benchmarks/probe_step.py --backends tensorflow jax torch --steps 5
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def run_one(args):
    import keras
    import numpy as np

    from keras_bat import AudioClassifier, BATBackbone
    from keras_bat.heads import CGP

    backbone = BATBackbone.from_preset(args.preset)
    model = AudioClassifier(backbone, CGP(args.classes, args.prototypes), task="multilabel")
    model.compile(jit_compile=args.jit)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(args.batch, args.frames, 128)).astype("float32")
    y = (rng.uniform(size=(args.batch, args.classes)) < 0.05).astype("float32")
    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        loss = model.train_on_batch(x, y, return_dict=True)["loss"]
        elapsed = time.perf_counter() - start
        if step >= args.warmup:
            times.append(elapsed)
    result = {"backend": keras.backend.backend(), "jit": args.jit, "median_s": statistics.median(times),
              "min_s": min(times), "steps": args.steps, "loss": float(loss)}
    print(json.dumps(result))


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
    parser.add_argument("--jit", default="auto", help="jit_compile for model.compile: auto, true or false")
    parser.add_argument("--output", default="benchmarks/results/probe_step.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.jit = {"true": True, "false": False}.get(str(args.jit).lower(), "auto")
    if args.child:
        return run_one(args)

    results = []
    for backend in args.backends:
        options = {"preset": args.preset, "batch": args.batch, "frames": args.frames,
                   "prototypes": args.prototypes, "classes": args.classes, "warmup": args.warmup,
                   "steps": args.steps, "jit": args.jit}
        command = [sys.executable, __file__, "--child"]
        for key, value in options.items():
            command += [f"--{key}", str(value)]
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode or not lines:
            print(f"{backend}: failed\n{done.stderr[-2000:]}")
            continue
        results.append(json.loads(lines[-1]))
    print(f"CGP probe step: {args.preset}, batch {args.batch} x {args.frames} frames, "
          f"{args.prototypes} prototypes, {args.classes} classes")
    print(f"{'backend':12s} {'jit':>6s} {'median s':>9s} {'min s':>7s}")
    for r in results:
        print(f"{r['backend']:12s} {str(r['jit']):>6s} {r['median_s']:9.2f} {r['min_s']:7.2f}")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"config": {k: v for k, v in vars(args).items() if k != "child"}, "results": results}, f,
                  indent=2)


if __name__ == "__main__":
    main()
