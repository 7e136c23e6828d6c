"""Sound events of long recordings in constant memory: `keras-bat tag --events` on recordings of
several lengths, its peak resident memory and wall time, and its events against those computed
from the whole clip's frame probabilities (`AudioClassifier.predict_long` on the whole
spectrogram, then scipy's median filter and the same thresholds), which is also the in-memory
baseline for memory and time.

A frame-level task preset (a `bat_small` encoder with random weights and a CGP frame head: memory
and time do not depend on the weights) is written first. Each measurement runs in a process of
its own, its peak resident memory read from the kernel (`ru_maxrss`, see long_recording.py).
The thresholds lie near each class's median frame probability on the longest recording (in the
widest gap between frame values there, so that no frame sits on a threshold), so that every class
has events.

    python benchmarks/tag_long_recording.py --minutes 1 30 --backend torch
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from long_recording import run_measured, write_recording

LABELS = [f"class_{i}" for i in range(10)]


def make_preset(args):
    import warnings

    import keras

    from keras_bat.heads import CGP
    from keras_bat.layers import LogMelSpectrogram
    from keras_bat.models import AudioClassifier, BATBackbone

    keras.utils.set_random_seed(0)
    warnings.simplefilter("ignore")  # random weights are intended here
    model = AudioClassifier(BATBackbone.from_preset(args.backbone, load_weights=False),
                            CGP(len(LABELS), 1000, "frame"), frontend=LogMelSpectrogram(), task="frame",
                            label_names=LABELS)
    model.save_to_preset(args.preset)


def whole_clip_probabilities(args):
    """The in-memory path: the frontend on the whole recording, `predict_long` on it."""
    import keras
    import soundfile

    from keras_bat.models import AudioClassifier, RecordingStream

    model = AudioClassifier.from_preset(args.preset)
    waveform = soundfile.read(args.recording, dtype="float32")[0]
    frames, padded = RecordingStream(model.backbone, model.frontend).layout(len(waveform))
    spectrogram = keras.ops.convert_to_numpy(model.frontend(waveform[None]))[:, :frames]
    spectrogram = np.pad(spectrogram, [(0, 0), (0, padded - frames), (0, 0)])
    logits = model.predict_long(spectrogram)[0].astype("float64")
    np.save(args.output, 1 / (1 + np.exp(-logits)))


def thresholds_between(probabilities):
    """Per class, the midpoint of the widest gap between frame values near the median."""
    thresholds = []
    for values in np.sort(probabilities, axis=0).T:
        middle = len(values) // 2
        k = max(range(max(1, middle - 8), min(len(values), middle + 9)), key=lambda i: values[i] - values[i - 1])
        thresholds.append((values[k] + values[k - 1]) / 2)
    return np.array(thresholds)


def reference_events(probabilities, thresholds, window, seconds_per_patch, duration):
    from scipy.ndimage import median_filter

    filtered = median_filter(probabilities, size=(window, 1), mode="nearest")
    events = []
    for label in range(probabilities.shape[1]):
        active = np.r_[False, filtered[:, label] >= thresholds[label], False].astype(int)
        changes = np.flatnonzero(np.diff(active))
        for first, end in zip(changes[::2], changes[1::2]):
            events.append((round(first * seconds_per_patch, 4), round(min(end * seconds_per_patch, duration), 4),
                           LABELS[label], float(probabilities[first:end, label].max())))
    return sorted(events, key=lambda e: (e[0], e[2]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, nargs="+", default=[1, 30])
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--backbone", default="bat_small")
    parser.add_argument("--median-filter", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=4,
                        help="chunks of 10.24 s per forward pass: a recording shorter than a full batch of chunks "
                             "never runs one, so compare lengths that do")
    parser.add_argument("--workdir", default="benchmarks/results/tag_long_recording")
    parser.add_argument("--child", choices=["preset", "whole_clip"], help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    parser.add_argument("--recording", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "preset":
        return make_preset(args)
    if args.child == "whole_clip":
        return whole_clip_probabilities(args)

    os.environ["KERAS_BACKEND"] = args.backend
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    preset = workdir / "preset"
    script = str(Path(__file__).resolve())
    subprocess.run([sys.executable, script, "--child", "preset", "--preset", str(preset),
                    "--backbone", args.backbone], check=True)
    recordings = {}
    for minutes in args.minutes:
        recordings[minutes] = workdir / f"recording_{minutes}min.wav"
        if not recordings[minutes].exists():
            write_recording(recordings[minutes], minutes)

    longest = max(args.minutes)
    probabilities_file = workdir / "whole_clip_probabilities.npy"
    whole_seconds, whole_rss = run_measured([sys.executable, script, "--child", "whole_clip", "--preset",
                                             str(preset), "--recording", str(recordings[longest]),
                                             "--output", str(probabilities_file)])
    probabilities = np.load(probabilities_file)
    thresholds = thresholds_between(probabilities)
    threshold_text = ",".join(f"{label}={value:.9f}" for label, value in zip(LABELS, thresholds))

    rows = []
    for minutes in args.minutes:
        output = workdir / f"tags_{minutes}min.json"
        seconds, rss = run_measured(["keras-bat", "--backend", args.backend, "tag", str(recordings[minutes]),
                                     "--model", str(preset), "--events", "--threshold", threshold_text,
                                     "--median-filter", str(args.median_filter), "--batch-size", str(args.batch_size),
                                     "--output", str(output),
                                     "--overwrite"])
        result = json.loads(output.read_text())[0]
        rows.append({"minutes": minutes, "seconds": round(seconds, 1), "peak_rss_mb": round(rss / 1024),
                     "events": len(result["events"]), "result": result})

    seconds_per_patch = 16 * 160 / 16000  # BAT's patches: 16 frames of 160 samples at 16 kHz
    window = max(1, int(round(args.median_filter / seconds_per_patch)))
    window += window % 2 == 0
    longest_row = next(row for row in rows if row["minutes"] == longest)
    expected = reference_events(probabilities, thresholds, window, seconds_per_patch, longest_row["result"]["seconds"])
    found = [(e["onset"], e["offset"], e["label"], e["score"]) for e in longest_row["result"]["events"]]
    same_events = [e[:3] for e in found] == [e[:3] for e in expected]
    score_error = max((abs(a[3] - b[3]) for a, b in zip(found, expected)), default=0.0) if same_events else None

    first = rows[0]
    print(f"\n`keras-bat tag --events --batch-size {args.batch_size}`, {args.backbone} + CGP frame head "
          f"(1000 prototypes, {len(LABELS)} classes), backend {args.backend}")
    print("| recording | wall time | peak RSS | vs first | events |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['minutes']} min | {row['seconds']} s | {row['peak_rss_mb']} MB | "
              f"{row['peak_rss_mb'] / first['peak_rss_mb']:.3f}x | {row['events']} |")
    print(f"| {longest} min, whole clip in memory (predict_long) | {whole_seconds:.1f} s | {whole_rss // 1024} MB | "
          f"{whole_rss / 1024 / first['peak_rss_mb']:.3f}x | {len(expected)} |")
    print(f"\nevents of the {longest}-minute recording equal the whole clip's: {same_events} "
          f"({len(found)} events; largest score difference {score_error})")
    summary = {"backend": args.backend, "backbone": args.backbone, "batch_size": args.batch_size, "rows": [
        {key: value for key, value in row.items() if key != "result"} for row in rows],
        "whole_clip": {"minutes": longest, "seconds": round(whole_seconds, 1), "peak_rss_mb": whole_rss // 1024},
        "same_events": same_events, "score_error": score_error, "measured": time.strftime("%Y-%m-%d")}
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if same_events else 1


if __name__ == "__main__":
    sys.exit(main())
