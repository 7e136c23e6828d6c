"""`keras-bat embed` on a folder of mixed recordings, under each backend: wall time,
peak resident memory, and how far the backends' embeddings are apart.

The folder is what a user's folder looks like: 20 recordings of 0.3 to 40 s
(239 s in all), at 8 to 48 kHz, mono and stereo, as WAV, FLAC, Ogg and MP3
(MP3s by sox where it is installed, else by soundfile). Every backend embeds
it with the same encoder (one random `bat_base` saved as a preset), all
blocks, `--frames`, each run a process of its own, peak memory from the
kernel (`ru_maxrss` of that process alone).

    python benchmarks/embed_backends.py --backends tensorflow jax torch
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from audio_files import speech_like, write  # noqa: E402
from long_recording import run_measured  # noqa: E402

LENGTHS = [0.3, 0.8, 1.5, 2.2, 3.0, 4.1, 5.0, 6.5, 7.7, 8.3, 9.9, 11.0, 12.4, 14.8, 16.0, 19.5, 21.0, 25.3, 30.0,
           40.0]
RATES = [8000, 16000, 22050, 44100, 48000]
FORMATS = ["wav", "flac", "ogg", "mp3"]


def write_folder(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for index, seconds in enumerate(LENGTHS):
        rate, extension = RATES[index % len(RATES)], FORMATS[index % len(FORMATS)]
        samples = speech_like(seconds, rate, seed=index)
        if index % 3 == 0:
            samples = np.stack([samples, 0.8 * samples], axis=1)
        path = folder / f"recording_{index:02d}.{extension}"
        if extension == "mp3" and shutil.which("sox"):
            source = folder / f".{path.stem}.wav"
            write(source, samples, rate, subtype="FLOAT")
            subprocess.run(["sox", str(source), "-C", "128", str(path)], check=True, capture_output=True)
            source.unlink()
        else:
            write(path, samples, rate, **{"ogg": {"format": "OGG"}, "mp3": {"format": "MP3"}}.get(extension, {}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workdir", default="benchmarks/results/embed_backends")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    folder, preset = workdir / "recordings", workdir / "bat_base_preset"
    if not folder.exists():
        write_folder(folder)
    if not preset.exists():
        code = ("import warnings; warnings.filterwarnings('ignore'); from keras_bat import BATBackbone; "
                f"BATBackbone.from_preset('bat_base', load_weights=False).save_to_preset({str(preset)!r})")
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    rows, embeddings = [], {}
    for backend in args.backends:
        output = workdir / f"embeddings_{backend}"
        command = ["keras-bat", "--backend", backend, "embed", str(folder), "--backbone", str(preset), "--frames",
                   "--batch-size", str(args.batch_size), "--output", str(output), "--overwrite"]
        seconds, peak_kb = run_measured(command)
        embeddings[backend] = np.load(output / "clip_embeddings.npy")
        rows.append({"backend": backend, "wall_s": round(seconds, 1), "peak_rss_gb": round(peak_kb / 2**20, 2),
                     "max_abs_difference_from_first": float(np.abs(embeddings[backend] -
                                                                   embeddings[args.backends[0]]).max())})
        print(f"{backend:<11} {seconds:6.1f} s wall, peak RSS {peak_kb / 2**20:.2f} GB, "
              f"max |difference| from {args.backends[0]}: {rows[-1]['max_abs_difference_from_first']:.1e}",
              flush=True)
    (workdir / "results.json").write_text(json.dumps({"audio_seconds": sum(LENGTHS), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
