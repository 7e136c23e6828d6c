"""Encode a clip with BAT: waveform -> log-mel spectrogram -> per-layer tokens.

Runs on any backend (set KERAS_BACKEND). With no arguments it synthesises a
10.24 s clip (a tone, a chirp and noise bursts), encodes it with a randomly
initialised ViT-S/16 and writes a figure of the spectrogram and of how each
layer's patch tokens vary over time, plus the features as `.npz`.

    python recipes/encode_demo.py
    python recipes/encode_demo.py --preset bat_base --weights path/to/checkpoint.pt
"""

import argparse
import os
import sys
import time

import numpy as np

SAMPLE_RATE = 16000


def synthetic_clip(seconds, seed=0):
    """A test clip: a 440 Hz tone, a rising chirp, and three noise bursts."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    clip = 0.3 * np.sin(2 * np.pi * 440.0 * t) * (t < seconds / 2)
    clip += 0.2 * np.sin(2 * np.pi * (200.0 * t + 300.0 * t**2)) * (t >= seconds / 3)
    for start in rng.uniform(0, seconds - 0.3, size=3):
        burst = (t >= start) & (t < start + 0.2)
        clip[burst] += 0.5 * rng.normal(size=burst.sum())
    return clip.astype("float32")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="bat_small",
                        help="architecture preset or preset directory (default: bat_small)")
    parser.add_argument("--weights", default=None,
                        help="official checkpoint (.safetensors, .pt or folder) to load")
    parser.add_argument("--seconds", type=float, default=10.24, help="clip length (default: 10.24)")
    parser.add_argument("--depth", type=int, default=None, help="override the preset's depth")
    parser.add_argument("--output-dir", default="demo_output", help="where figures and features go")
    return parser.parse_args(argv)


def time_novelty(patch_tokens):
    """Per layer and time patch: 1 - cosine(frequency-mean token, clip-mean token)."""
    frames = patch_tokens.mean(axis=2)  # L, T_patches, D
    clip = frames.mean(axis=1, keepdims=True)  # L, 1, D
    cosine = (frames * clip).sum(-1) / (
        np.linalg.norm(frames, axis=-1) * np.linalg.norm(clip, axis=-1) + 1e-8)
    return 1.0 - cosine  # L, T_patches


def plot_features(spectrogram, patch_tokens, path):
    """Spectrogram on top, each layer's time novelty of its patch tokens below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6))
    top.imshow(spectrogram.T, origin="lower", aspect="auto", cmap="magma")
    top.set(title="BAT log-mel spectrogram (per-clip min-max)", xlabel="frame (10 ms)", ylabel="mel bin")
    image = bottom.imshow(time_novelty(patch_tokens), origin="lower", aspect="auto", cmap="viridis")
    bottom.set(title="patch tokens: 1 - cosine to the clip's mean token",
               xlabel="time patch (160 ms)", ylabel="block")
    fig.colorbar(image, ax=bottom, fraction=0.02)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import keras

    from keras_bat import BATBackbone, LogMelSpectrogram
    from keras_bat.convert import load_official_weights

    waveform = synthetic_clip(args.seconds)[None]  # 1, samples
    overrides = {} if args.depth is None else {"depth": args.depth}
    backbone = BATBackbone.from_preset(args.preset, **overrides)
    if args.weights:
        load_official_weights(backbone, args.weights)
    patch = backbone.patch_size
    frames = int(args.seconds * SAMPLE_RATE) // 160 // patch * patch  # whole patches only
    frontend = LogMelSpectrogram(num_mels=backbone.num_mels, time_frames=max(frames, patch))

    start = time.perf_counter()
    spectrogram = frontend(waveform)
    features = backbone(spectrogram)
    features = {k: keras.ops.convert_to_numpy(v) for k, v in features.items()}
    seconds = time.perf_counter() - start

    spectrogram = keras.ops.convert_to_numpy(spectrogram)
    print(f"backend         {keras.backend.backend()}")
    print(f"model           {args.preset} (dim {backbone.dim}, depth {backbone.depth}, "
          f"{backbone.count_params() / 1e6:.1f}M parameters)"
          + ("" if args.weights else ", random weights"))
    print(f"waveform        {tuple(waveform.shape)} at {SAMPLE_RATE} Hz")
    print(f"spectrogram     {tuple(spectrogram.shape)}  range [{spectrogram.min():.2f}, {spectrogram.max():.2f}]")
    print(f"cls_tokens      {tuple(features['cls_tokens'].shape)}")
    print(f"patch_tokens    {tuple(features['patch_tokens'].shape)}")
    print(f"encode time     {seconds:.2f} s (first call, includes tracing)")
    novelty = time_novelty(features["patch_tokens"][0])
    print("block  cls.patch-mean cosine  time novelty (mean / max)")
    for i in range(backbone.depth):
        cls = features["cls_tokens"][0, i]
        patches = features["patch_tokens"][0, i].reshape(-1, backbone.dim).mean(axis=0)
        cosine = cls @ patches / (np.linalg.norm(cls) * np.linalg.norm(patches) + 1e-8)
        print(f"{i:5d}  {cosine:20.3f}  {novelty[i].mean():8.3f} / {novelty[i].max():.3f}")

    os.makedirs(args.output_dir, exist_ok=True)
    np.savez(os.path.join(args.output_dir, "features.npz"), spectrogram=spectrogram, **features)
    figure = os.path.join(args.output_dir, "features.png")
    try:
        plot_features(spectrogram[0], features["patch_tokens"][0], figure)
        print(f"figure          {figure}")
    except ImportError:
        print("figure          skipped (pip install matplotlib)")
    print(f"features        {os.path.join(args.output_dir, 'features.npz')}")
    return features


if __name__ == "__main__":
    main()
