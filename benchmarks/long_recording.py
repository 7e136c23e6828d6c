"""Whole-recording embedding in constant memory: wall time and peak resident
memory of `keras-bat embed` on recordings of several lengths.

Each length gets one 16 kHz recording (tones, chirps and noise, written a
minute at a time) in a folder of its own; `keras-bat embed` runs on it in a
process of its own, and the process's peak resident memory is read from the
kernel (`ru_maxrss` of that child alone, through a small wrapper process).

    python benchmarks/long_recording.py --minutes 10 60 120 --backend tensorflow
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# Runs the command and prints its own peak resident memory (the wrapper's children are only it).
WRAPPER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
print("peak_rss_kb", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def run_measured(command):
    """Runs `command` in a process of its own; returns `(wall seconds, peak resident kB)`, or
    exits with its standard error when it fails."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", WRAPPER, *command], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds, int(result.stderr.rsplit("peak_rss_kb", 1)[1].split()[0])


def write_recording(path, minutes, rate=16000, seed=0):
    import soundfile

    rng = np.random.default_rng(seed)
    t = np.arange(60 * rate) / rate
    with soundfile.SoundFile(str(path), "w", rate, 1, subtype="PCM_16") as sound:
        for minute in range(minutes):
            frequency = 200.0 + 40.0 * (minute % 20)
            block = 0.3 * np.sin(2 * np.pi * (frequency + 50.0 * t) * t) + 0.05 * rng.normal(size=t.size)
            sound.write(block.astype("float32"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, nargs="+", default=[10, 60, 120])
    parser.add_argument("--backend", default="tensorflow")
    parser.add_argument("--backbone", default="bat_base")
    parser.add_argument("--layers", default="all")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workdir", default="benchmarks/results/long_recording")
    args = parser.parse_args(argv)

    workdir = Path(args.workdir)
    rows = []
    for minutes in args.minutes:
        folder = workdir / f"{minutes}min"
        folder.mkdir(parents=True, exist_ok=True)
        recording = folder / "recording.wav"
        if not recording.exists():
            write_recording(recording, minutes)
        output = workdir / f"embeddings_{minutes}min"
        command = ["keras-bat", "--backend", args.backend, "embed", str(folder), "--backbone", args.backbone,
                   "--frames", "--layers", args.layers, "--batch-size", str(args.batch_size), "--output", str(output),
                   "--overwrite"]  # each run measured from the start
        seconds, peak_kb = run_measured(command)
        size = sum(f.stat().st_size for f in output.iterdir())
        rows.append({"minutes": minutes, "wall_s": round(seconds, 1), "peak_rss_gb": round(peak_kb / 2**20, 2),
                     "output_mb": round(size / 2**20, 1), "seconds_per_audio_hour": round(seconds * 60 / minutes, 1),
                     "command": " ".join(command)})
        print(f"{minutes:4d} min: {seconds:7.1f} s wall ({seconds * 60 / minutes:.0f} s per audio hour), "
              f"peak RSS {peak_kb / 2**20:.2f} GB, output {size / 2**20:.0f} MB", flush=True)
    (workdir / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
