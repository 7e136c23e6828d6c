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
