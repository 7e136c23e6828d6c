"""Expected step time and scaling efficiency of data-parallel pretraining over several hosts,
from a measured single-device step time and the bytes each step all-reduces.

Every step all-reduces the gradients of the trainable variables (student and decoder; the EMA
teacher is updated locally from the reduced student): `parameters x 4` bytes (float32 gradients:
the variables stay float32 under mixed bfloat16). A ring all-reduce over `N` hosts sends and
receives `2 (N - 1) / N` times that through each host's link, so at `B` bit/s

    communication(N) = 2 (N - 1) / N * parameters * 4 * 8 / B
    step(N) = step(1) + communication(N)      (no overlap of communication and compute)
    efficiency(N) = step(1) / step(N)

with the global batch growing with the hosts (each host keeps its batch). Overlapping the
all-reduce with the backward pass, as XLA schedules it where it can, lowers step(N) towards
max(step(1), communication(N)); the table gives both bounds.

    python benchmarks/scaling_on_paper.py --step-ms 276.9
"""

import argparse
import os

BANDWIDTHS_GBIT = (25, 100, 400)
HOSTS = (1, 2, 4, 8, 16, 32, 64)


def trainable_parameters(backbone, decoder_depth, decoder_heads):
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import numpy as np

    from keras_bat.models import BATBackbone, BATPretrainer

    encoder = {k: v for k, v in BATBackbone.preset_config(backbone).items() if k not in ("name", "trainable", "dtype")}
    pretrainer = BATPretrainer(encoder=encoder, decoder_depth=decoder_depth, decoder_heads=decoder_heads,
                               time_frames=1024, num_views=2, seed=0)
    pretrainer(np.zeros((1, 1024, 128), "float32"))
    return sum(int(np.prod(v.shape)) for v in pretrainer.trainable_variables)


def communication_seconds(parameters, hosts, gbit):
    return 2 * (hosts - 1) / hosts * parameters * 4 * 8 / (gbit * 1e9)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step-ms", type=float, default=276.9,
                        help="measured single-device step, ms (default: docs/kernels.md's JAX BAT pretraining step, "
                             "12 clips x 16 views, ViT-B, bfloat16, one H200)")
    parser.add_argument("--backbone", default="bat_base")
    parser.add_argument("--decoder-depth", type=int, default=6)
    parser.add_argument("--decoder-heads", type=int, default=12)
    args = parser.parse_args(argv)

    parameters = trainable_parameters(args.backbone, args.decoder_depth, args.decoder_heads)
    step = args.step_ms / 1000
    print(f"trainable parameters {parameters / 1e6:.1f} M: {parameters * 4 / 1e6:.1f} MB of float32 gradients "
          f"all-reduced per step; single-device step {args.step_ms} ms\n")
    print("| hosts | " + " | ".join(f"{g} Gbit/s: step (overlapped), efficiency" for g in BANDWIDTHS_GBIT) + " |")
    print("|---|" + "---|" * len(BANDWIDTHS_GBIT))
    for hosts in HOSTS:
        cells = []
        for gbit in BANDWIDTHS_GBIT:
            communication = communication_seconds(parameters, hosts, gbit)
            serial, overlapped = step + communication, max(step, communication)
            cells.append(f"{serial * 1000:.0f} ({overlapped * 1000:.0f}) ms, "
                         f"{step / serial:.0%} ({step / overlapped:.0%})")
        print(f"| {hosts} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
