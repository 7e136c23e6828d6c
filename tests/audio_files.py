"""Audio files for tests: good ones in every format and every kind of bad one."""

import numpy as np


def tone(seconds=1.0, rate=16000, frequency=440.0, amplitude=0.5):
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype("float32")


def write(path, samples, rate=16000, **kwargs):
    import soundfile

    soundfile.write(str(path), samples, rate, **kwargs)
    return str(path)


def bad_files(folder):
    """`{reason: path}`: one file for each kind of bad input."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"file not found": str(folder / "missing.wav")}
    (folder / "empty.wav").write_bytes(b"")
    files["empty file"] = str(folder / "empty.wav")
    good = (folder / "good.wav")
    write(good, tone(1.0), subtype="PCM_16")
    data = good.read_bytes()
    (folder / "truncated.wav").write_bytes(data[: len(data) // 2])
    files["truncated file"] = str(folder / "truncated.wav")
    (folder / "header.wav").write_bytes(data[:30])
    files["corrupt header"] = str(folder / "header.wav")
    (folder / "notes.wav").write_text("this is not audio\n" * 50)
    files["not audio"] = str(folder / "notes.wav")
    nan = tone(1.0)
    nan[100] = np.nan
    files["NaN samples"] = write(folder / "nan.wav", nan, subtype="FLOAT")
    inf = tone(1.0)
    inf[5] = np.inf
    files["inf samples"] = write(folder / "inf.wav", inf, subtype="FLOAT")
    files["silent"] = write(folder / "zeros.wav", np.zeros(16000, "float32"), subtype="PCM_16")
    files["odd sample rate"] = write(folder / "rate500.wav", tone(1.0, 500, 100.0), 500, subtype="PCM_16")
    files["too long"] = write(folder / "long.wav", np.tile(tone(1.0), 20), subtype="PCM_16")
    return files


def speech_like(seconds, rate, seed=0):
    """A few seconds of voiced, pitched, amplitude-modulated sound with pauses: what an encoder
    meets in a recording, unlike a steady tone."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    voiced = sum(np.sin(2 * np.pi * k * np.cumsum(pitch) / rate) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 2.3 * t), 0, None) ** 0.5
    return (0.3 * voiced * envelope + 0.01 * rng.normal(size=t.size)).astype("float32")


def sox_mp3(path, samples, rate, channels=1):
    """An MP3 written by sox (LAME without a Xing tag: libsndfile estimates its length from the
    bitrate, thousands of frames more than decode)."""
    import subprocess

    from helpers import require_program

    sox = require_program("sox")
    source = str(path) + ".wav"
    write(source, np.repeat(samples[:, None], channels, axis=1), rate, subtype="FLOAT")
    result = subprocess.run([sox, source, "-C", "128", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        import pytest

        pytest.fail(f"sox could not write an MP3 (apt-get install libsox-fmt-mp3): {result.stderr.strip()}")
    return str(path)
