"""Training steps on a GPU at BAT's shapes, for `benchmarks/gpu_check.sh`.

`--workload encoder` (torch backend): a ViT-B forward + backward step over
clips of 1024 frames, half of them padded to 512 frames, with the Triton
kernels on and off, in bfloat16 (mixed precision) and float32.
`--workload pretrain` (any backend): one BAT pretraining step (ViT-B student,
6-block decoder, 16 views per clip, mixed bfloat16) through `train_on_batch`,
jit-compiled on JAX and TensorFlow (XLA).
Each run appends one JSON line per measurement to `--output`;
`--summarize` prints them as one table with MFU against the GPU's dense
bfloat16 peak.

    python benchmarks/gpu_steps.py --workload encoder --output results/steps.jsonl
    KERAS_BACKEND=jax python benchmarks/gpu_steps.py --workload pretrain --output results/steps.jsonl
    python benchmarks/gpu_steps.py --summarize results/steps.jsonl
    python benchmarks/gpu_steps.py --workload encoder --smoke   # tiny shapes on the CPU (checks the script)
"""

import argparse
import json
import os
import statistics
import time

from common import encoder_gflop

# Dense bfloat16 tensor-core peaks (TFLOP/s, without sparsity) from NVIDIA's data sheets.
BF16_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.0}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=["encoder", "pretrain"])
    parser.add_argument("--summarize", metavar="JSONL", help="print the table of a results file")
    parser.add_argument("--output", default="benchmarks/results/gpu_steps.jsonl")
    parser.add_argument("--clips", type=int, default=None, help="clips per step (default: 32 encoder, 12 pretrain)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="tiny model and shapes, on the CPU")
    return parser.parse_args(argv)


def bf16_peak_tflops(device_name):
    for key in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):
        if key in device_name:
            return BF16_PEAK_TFLOPS[key]
    return None


def _sizes(smoke):
    """Encoder sizes and frames: ViT-B at 1024 frames, or a tiny smoke model."""
    if smoke:
        return {"dim": 32, "depth": 2, "num_heads": 2}, 64, 2
    return {"dim": 768, "depth": 12, "num_heads": 12}, 1024, 6


def _record(args, row):
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


def encoder_steps(args):
    """ViT-B forward + backward (torch backend), kernels on and off."""
    import keras
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from keras_bat import BATBackbone

    if keras.backend.backend() != "torch":
        raise SystemExit("--workload encoder runs under KERAS_BACKEND=torch")
    device = "cpu" if args.smoke else "cuda"
    encoder, frames, _ = _sizes(args.smoke)
    clips = args.clips or (2 if args.smoke else 32)
    generator = torch.Generator(device=device).manual_seed(0)
    padding = torch.ones(clips, frames, device=device)
    padding[1::2, frames // 2:] = 0  # every second clip is half padding
    inputs = {"spectrogram": torch.rand(clips, frames, 128, device=device, generator=generator),
              "padding_mask": padding}
    flops = None
    for dtype in ("mixed_bfloat16", "float32"):
        for use_kernels in (True, False):
            keras.utils.set_random_seed(0)  # the same weights on and off
            backbone = BATBackbone(**encoder, use_padding_mask=True, use_kernels=use_kernels, dtype=dtype)
            weights = [w.value for w in backbone.trainable_weights]

            def step():
                features = backbone(inputs, training=True)
                loss = features["cls_tokens"].float().square().mean() + features["patch_tokens"].float().mean()
                torch.autograd.grad(loss, weights)
                return loss

            loss = float(step().detach())
            if flops is None and not use_kernels:  # FLOPs of the step as PyTorch runs it (SDPA counted)
                with FlopCounterMode(display=False) as counter:
                    step()
                flops = counter.get_total_flops()
                _record(args, {"workload": "flops", "name": "ViT-B fwd+bwd, half the clips padded", "flops": flops})
            timing = _time(step, args.warmup, args.steps)
            _record(args, {"workload": "ViT-B fwd+bwd, half the clips padded", "backend": "torch",
                           "dtype": dtype, "kernels": use_kernels, "clips": clips, "frames": frames,
                           "loss": loss, **timing, "peak_mib": _peak_mib("torch")})


def pretrain_steps(args):
    """One BAT pretraining step on the current backend."""
    import keras
    import numpy as np

    from keras_bat.models import BATPretrainer

    backend = keras.backend.backend()
    encoder, frames, decoder_depth = _sizes(args.smoke)
    clips = args.clips or (2 if args.smoke else 12)
    views = 2 if args.smoke else 16
    model = BATPretrainer(encoder={**encoder, "dtype": "mixed_bfloat16"}, decoder_depth=decoder_depth,
                          decoder_heads=encoder["num_heads"], time_frames=frames, num_views=views, seed=0)
    model.compile(jit_compile=backend != "torch")
    x = np.random.default_rng(0).uniform(size=(clips, frames, 128)).astype("float32")
    timing = _time(lambda: model.train_on_batch(x), args.warmup, args.steps)
    patches = frames // 16 * 8
    kept = int(patches * (1 - model.mask_ratio))
    tokens = {"student": (clips * views, kept + 1), "decoder": (clips * views, patches),
              "teacher": (clips, patches + 1)}
    flops = 1e9 * (3 * encoder_gflop(*tokens["student"], encoder["dim"], encoder["depth"])
                   + 3 * encoder_gflop(*tokens["decoder"], encoder["dim"], decoder_depth)
                   + encoder_gflop(*tokens["teacher"], encoder["dim"], encoder["depth"]))
    _record(args, {"workload": f"BAT pretraining step, {clips} clips x {views} views", "backend": backend,
                   "dtype": "mixed_bfloat16", "kernels": "auto" if backend == "torch" else False,
                   "jit": backend != "torch",
                   "clips": clips, "frames": frames, "analytic_flops": flops, **timing,
                   "peak_mib": _peak_mib(backend)})


def _cuda_torch():
    """The torch module when Keras runs on torch with a CUDA GPU, else `None`."""
    import keras

    if keras.backend.backend() != "torch":
        return None
    import torch

    return torch if torch.cuda.is_available() else None


def _time(step, warmup, steps):
    """Median and minimum seconds per step after `warmup` steps (torch's peak
    memory counter restarts after the warm-up, for `_peak_mib`)."""
    torch = _cuda_torch()

    def synchronize():
        if torch:
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    synchronize()
    if torch:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times)}


def _peak_mib(backend):
    try:
        if backend == "torch":
            import torch

            return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        if backend == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            return stats.get("peak_bytes_in_use", 0) / 2**20 or None
        if backend == "tensorflow":
            import tensorflow as tf

            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    except Exception:  # memory statistics are a nicety: a backend without them reports none
        return None
    return None


def summarize(path, device_name):
    """One table: step time, TFLOP/s and MFU against the bfloat16 peak."""
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    flops = {r["name"]: r["flops"] for r in rows if r["workload"] == "flops"}
    peak = bf16_peak_tflops(device_name)
    print(f"device: {device_name}; MFU against the dense bfloat16 peak "
          f"({'unknown' if peak is None else f'{peak:.0f} TFLOP/s'})")
    print(f"{'workload':44s} {'backend':10s} {'dtype':15s} {'kernels':>7s} {'median ms':>10s} {'TFLOP/s':>8s} "
          f"{'MFU':>6s} {'peak MiB':>9s}")
    baseline = {}
    for r in rows:
        if r["workload"] == "flops":
            continue
        work = r.get("analytic_flops") or flops.get(r["workload"])
        tflops = work / r["median_s"] / 1e12 if work else None
        mfu = f"{100 * tflops / peak:5.1f}%" if tflops and peak else "n/a"
        memory = f"{r['peak_mib']:.0f}" if r.get("peak_mib") else "n/a"
        print(f"{r['workload'][:44]:44s} {r['backend']:10s} {r['dtype']:15s} {str(r['kernels']):>7s} "
              f"{1000 * r['median_s']:10.1f} {'n/a' if tflops is None else f'{tflops:8.1f}':>8s} {mfu:>6s} "
              f"{memory:>9s}")
        if r["workload"].startswith("ViT-B"):
            baseline.setdefault(r["dtype"], {})[r["kernels"]] = r
    for dtype, pair in baseline.items():
        if True in pair and False in pair:
            print(f"ViT-B step {dtype}: kernels on {pair[False]['median_s'] / pair[True]['median_s']:.2f}x the speed "
                  f"of kernels off; loss on {pair[True]['loss']:.6f} vs off {pair[False]['loss']:.6f}")


def main(argv=None):
    args = parse_args(argv)
    if args.summarize:
        name = "cpu"
        try:
            import torch

            name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        except ImportError:
            pass
        return summarize(args.summarize, name)
    if args.workload == "encoder":
        return encoder_steps(args)
    if args.workload == "pretrain":
        return pretrain_steps(args)
    raise SystemExit("give --workload encoder|pretrain or --summarize FILE")


if __name__ == "__main__":
    main()
