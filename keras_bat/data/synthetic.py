"""A procedurally generated sound-event dataset, shipped as code.

Eight classes of synthetic sounds with random parameters (pitch, sweep, timbre,
rate, duration, level), mixed over a faint noise floor: single-class clips for
multiclass tasks, mixtures for multi-label tasks, and timed events for sound
event detection. `write_synthetic_dataset` writes them as audio files in the
layouts the dataset readers know, so that the whole path from files to
results runs on it.
"""

import csv
import json
from pathlib import Path

import numpy as np

from keras_bat.data.datasets import csv_dataset, dcase2016_task2, register_dataset
from keras_bat.errors import UsageError

SOUND_CLASSES = ("tone", "chirp", "harmonic_stack", "noise_burst", "click_train", "am_tone", "fm_tone",
                 "band_noise")


def _envelope(n, rng, sample_rate):
    attack = min(n // 2, int(sample_rate * rng.uniform(0.005, 0.05)))
    release = min(n - attack, int(sample_rate * rng.uniform(0.02, 0.2)))
    envelope = np.ones(n)
    envelope[:attack] = np.linspace(0, 1, attack, endpoint=False)
    if release:
        envelope[n - release:] = np.linspace(1, 0, release)
    return envelope


def synthesize_event(sound_class, seconds, rng, sample_rate=16000):
    """One event of `sound_class` (a name in `SOUND_CLASSES`), float64 in [-1, 1]."""
    n = max(int(seconds * sample_rate), 1)
    t = np.arange(n) / sample_rate
    nyquist = sample_rate / 2
    if sound_class == "tone":
        x = np.sin(2 * np.pi * rng.uniform(200, 4000) * t)
    elif sound_class == "chirp":
        f0, f1 = rng.uniform(200, 6000, size=2)
        x = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds)))
    elif sound_class == "harmonic_stack":
        f0 = rng.uniform(100, 600)
        harmonics = np.arange(1, int(min(12, nyquist / f0 - 1)) + 1)
        x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in harmonics)
    elif sound_class == "noise_burst":
        x = rng.normal(size=n)
    elif sound_class == "click_train":
        x = np.zeros(n)
        period = int(sample_rate / rng.uniform(4, 40))
        x[::max(period, 1)] = 1.0
        x = np.convolve(x, np.exp(-np.arange(64) / 8.0) * rng.choice([-1, 1], 64), mode="same")
    elif sound_class == "am_tone":
        carrier = np.sin(2 * np.pi * rng.uniform(300, 3000) * t)
        x = carrier * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 30) * t))
    elif sound_class == "fm_tone":
        fc, deviation, rate = rng.uniform(500, 3000), rng.uniform(50, 400), rng.uniform(2, 15)
        x = np.sin(2 * np.pi * fc * t + (deviation / rate) * np.sin(2 * np.pi * rate * t))
    elif sound_class == "band_noise":
        spectrum = np.fft.rfft(rng.normal(size=n))
        frequencies = np.fft.rfftfreq(n, 1 / sample_rate)
        low = rng.uniform(200, 5000)
        spectrum[(frequencies < low) | (frequencies > low * rng.uniform(1.2, 1.6))] = 0
        x = np.fft.irfft(spectrum, n)
    else:
        raise UsageError(f"Unknown sound class {sound_class!r}; expected one of {SOUND_CLASSES}.")
    x = x * _envelope(n, rng, sample_rate)
    return x / (np.max(np.abs(x)) + 1e-9)


def synthesize_clip(classes, seconds, rng, sample_rate=16000, event_seconds=(0.5, 2.0), snr_db=(20, 40)):
    """A clip with one event per entry of `classes` (indices into
    `SOUND_CLASSES`) at random onsets, levels and durations, over noise.

    Returns:
        `(waveform float32, events)` with events `(onset_s, offset_s, class_index)`.
    """
    n = int(seconds * sample_rate)
    clip = np.zeros(n)
    events = []
    for class_index in classes:
        duration = min(rng.uniform(*event_seconds), seconds)
        onset = rng.uniform(0, seconds - duration)
        event = synthesize_event(SOUND_CLASSES[class_index], duration, rng, sample_rate)
        start = int(onset * sample_rate)
        event = event[: n - start]
        clip[start:start + len(event)] += event * 10 ** (rng.uniform(-6, 0) / 20)
        events.append((round(onset, 4), round(onset + len(event) / sample_rate, 4), int(class_index)))
    signal_rms = np.sqrt(np.mean(clip**2)) + 1e-6
    noise_rms = signal_rms / 10 ** (rng.uniform(*snr_db) / 20)
    clip += rng.normal(scale=noise_rms, size=n)
    clip *= 0.9 / (np.max(np.abs(clip)) + 1e-9)
    return clip.astype("float32"), sorted(events)


def write_synthetic_dataset(folder, task="multiclass", splits=None, clip_seconds=2.0, max_events=3,
                            sample_rate=16000, seed=0):
    """Writes the procedural dataset as wav files plus metadata.

    Args:
        folder: output folder (created).
        task: `"multiclass"` (one event per clip), `"multilabel"` (1 to
            `max_events` events of distinct classes) or `"frame"` (1 to
            `max_events` timed events, for event detection).
        splits: dict `{split: num_clips}`. Defaults to `{"train": 256, "test": 128}`.
        clip_seconds: float. Defaults to `2.0`.
        max_events: int, for the mixtures. Defaults to 3.
        sample_rate: int. Defaults to 16000.
        seed: int.

    Returns:
        Paths of the metadata: `{split: "<split>.csv"}` (read with
        `keras_bat.data.csv_dataset(path, class_names=SOUND_CLASSES)`), or for
        `"frame"` the folder, in the DCASE2016 task 2 (HEAR) layout that
        `keras_bat.data.dcase2016_task2` reads. A folder already written with
        the same arguments is left as it is (the data are deterministic).
    """
    import soundfile

    if task not in ("multiclass", "multilabel", "frame"):
        raise UsageError(f"`task` must be 'multiclass', 'multilabel' or 'frame'. Received: {task!r}")
    folder = Path(folder).resolve()  # metadata paths that hold wherever the reader runs
    splits = splits or {"train": 256, "test": 128}
    arguments = {"task": task, "splits": splits, "clip_seconds": clip_seconds, "max_events": max_events,
                 "sample_rate": sample_rate, "seed": seed}
    record = folder / "synthetic.json"
    if record.exists():
        previous = json.loads(record.read_text())
        if previous["arguments"] == arguments:
            return {split: str(folder if task == "frame" else folder / f"{split}.csv") for split in splits}
    rng = np.random.default_rng(seed)
    num_classes = len(SOUND_CLASSES)
    written = {}
    for split, num_clips in splits.items():
        audio_folder = folder / ("48000" if task == "frame" else "audio") / split
        audio_folder.mkdir(parents=True, exist_ok=True)
        rows, events_by_file = [], {}
        for i in range(num_clips):
            if task == "multiclass":
                classes = [i % num_classes]  # balanced classes
            else:
                classes = rng.choice(num_classes, rng.integers(1, max_events + 1), replace=task == "frame")
            waveform, events = synthesize_clip(classes, clip_seconds, rng, sample_rate)
            name = f"{split}_{i:05d}.wav"
            soundfile.write(audio_folder / name, waveform, sample_rate, subtype="PCM_16")
            names = sorted({SOUND_CLASSES[c] for c in classes})
            rows.append({"path": f"audio/{split}/{name}", "label": ";".join(names)})
            events_by_file[name] = [{"label": SOUND_CLASSES[c], "start": 1000 * on, "end": 1000 * off}
                                    for on, off, c in events]
        if task == "frame":
            with open(folder / f"{split}.json", "w") as f:
                json.dump(events_by_file, f)
            written[split] = str(folder)
        else:
            with open(folder / f"{split}.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, ["path", "label"])
                writer.writeheader()
                writer.writerows(rows)
            written[split] = str(folder / f"{split}.csv")
    if task == "frame":
        with open(folder / "labelvocabulary.csv", "w", newline="") as f:
            f.write("idx,label\n" + "".join(f"{i},{name}\n" for i, name in enumerate(SOUND_CLASSES)))
    record.write_text(json.dumps({"arguments": arguments, "written": written}))
    return written


@register_dataset("synthetic", default_root="synthetic_data")
def _read_synthetic(root, split_names, fold=None, task="multiclass", **options):
    """The procedural dataset, written to `root` first (`options`: `write_synthetic_dataset`'s)."""
    written = write_synthetic_dataset(root, task=task, **options)
    if task == "frame":
        return dcase2016_task2(root)
    return {split: csv_dataset(path, class_names=SOUND_CLASSES, name=f"synthetic/{split}")
            for split, path in written.items()}
