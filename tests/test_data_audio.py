"""Decoding: formats, resampling, mix-down, segments, and every kind of bad file."""

import numpy as np
import pytest

from audio_files import bad_files, sox_mp3, speech_like, tone, write
from keras_bat.data import AudioDecodeError, audio_info, load_audio, resample
from keras_bat.data.audio import load_window

FORMATS = [("wav", {"subtype": "PCM_16"}, 1e-4), ("wav", {"subtype": "FLOAT"}, 1e-7),
           ("flac", {}, 1e-4), ("ogg", {"format": "OGG"}, 0.05), ("mp3", {"format": "MP3"}, 0.05)]


@pytest.mark.parametrize("extension,options,tolerance", FORMATS)
def test_formats_decode_to_the_written_samples(tmp_path, extension, options, tolerance):
    samples = tone(1.0)
    path = write(tmp_path / f"clip.{extension}", samples, **options)
    decoded = load_audio(path)
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    assert abs(len(decoded) - len(samples)) <= 1152  # mp3 frames
    n = min(len(decoded), len(samples))
    if extension in ("wav", "flac"):
        np.testing.assert_allclose(decoded[:n], samples[:n], atol=tolerance)
    else:  # lossy: same loudness and pitch
        assert abs(np.sqrt(np.mean(decoded**2)) - np.sqrt(np.mean(samples**2))) < tolerance
        assert abs(_peak_frequency(decoded, 16000) - 440) < 5


def _peak_frequency(x, rate):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spectrum) * rate / len(x)


@pytest.mark.parametrize("rate", [8000, 7350, 22050, 44100, 48000, 96000])
def test_other_sample_rates_are_resampled_to_16k(tmp_path, rate):
    path = write(tmp_path / "clip.wav", tone(1.5, rate, 1000.0), rate, subtype="FLOAT")
    decoded = load_audio(path)
    assert abs(len(decoded) - 24000) <= 1
    assert abs(_peak_frequency(decoded, 16000) - 1000.0) < 2
    np.testing.assert_allclose(np.sqrt(np.mean(decoded[2000:-2000] ** 2)), 0.5 / np.sqrt(2), rtol=0.01)


def test_resample_uses_soxr_high_quality():
    import soxr  # a dependency of keras-bat

    x = np.random.default_rng(0).normal(size=44100).astype("float32")
    np.testing.assert_array_equal(resample(x, 44100, 16000), soxr.resample(x, 44100, 16000, quality="HQ"))
    np.testing.assert_array_equal(resample(x, 16000, 16000), x)


def test_many_channels_are_mixed_down(tmp_path):
    channels = np.stack([tone(1.0, frequency=200.0 * (c + 1), amplitude=0.1) for c in range(8)], axis=1)
    path = write(tmp_path / "eight.wav", channels, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), channels.mean(axis=1), atol=1e-7)


def test_segments_read_only_the_requested_part(tmp_path):
    samples = np.linspace(-0.5, 0.5, 48000).astype("float32")
    path = write(tmp_path / "ramp.wav", samples, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path, offset=1.0, duration=0.5), samples[16000:24000])
    np.testing.assert_array_equal(load_audio(path, offset=2.5), samples[40000:])
    assert audio_info(path) == {"sample_rate": 16000, "frames": 48000, "channels": 1, "duration": 3.0,
                                "truncated": False}
    with pytest.raises(AudioDecodeError, match="no samples"):
        load_audio(path, offset=5.0)


EXPECTED_REASON = {
    "file not found": "file not found", "empty file": "empty file", "truncated file": "truncated file",
    "corrupt header": "not a readable audio file", "not audio": "not a readable audio file",
    "NaN samples": "NaN or inf samples", "inf samples": "NaN or inf samples",
    "silent": "silent", "odd sample rate": "unsupported sample rate", "too long": "too long",
}


@pytest.mark.parametrize("kind", sorted(EXPECTED_REASON))
def test_bad_files_raise_an_error_naming_the_file(tmp_path, kind):
    path = bad_files(tmp_path)[kind]
    with pytest.raises(AudioDecodeError) as error:
        load_audio(path, max_duration=10.0)
    assert path in str(error.value)
    assert error.value.path == path
    assert error.value.reason.startswith(EXPECTED_REASON[kind])
    assert isinstance(error.value, ValueError)


def test_truncated_compressed_files_are_rejected(tmp_path):
    for extension, options in (("flac", {}), ("mp3", {"format": "MP3"})):
        path = write(tmp_path / f"clip.{extension}", tone(2.0), **options)
        data = open(path, "rb").read()
        cut = tmp_path / f"cut.{extension}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(AudioDecodeError, match="cut"):
            load_audio(str(cut))


def test_silence_is_accepted_when_asked(tmp_path):
    path = bad_files(tmp_path)["silent"]
    np.testing.assert_array_equal(load_audio(path, allow_silence=True), np.zeros(16000, "float32"))


LONG_FILES = {  # name: writes a file of about `seconds` at `rate`
    "mp3 (soundfile)": lambda path, x, rate: write(path.with_suffix(".mp3"), x, rate, format="MP3"),
    "ogg (soundfile)": lambda path, x, rate: write(path.with_suffix(".ogg"), x, rate, format="OGG"),
    "flac (soundfile)": lambda path, x, rate: write(path.with_suffix(".flac"), x, rate),
    "mp3 (sox)": lambda path, x, rate: sox_mp3(path.with_suffix(".mp3"), x, rate),
    "stereo mp3 (sox)": lambda path, x, rate: sox_mp3(path.with_suffix(".mp3"), x, rate, channels=2),
}


@pytest.mark.parametrize("kind", sorted(LONG_FILES))
@pytest.mark.parametrize("rate", [22050, 16000])
def test_long_compressed_files_decode_whole(tmp_path, kind, rate):
    import soundfile

    path = LONG_FILES[kind](tmp_path / "speech", speech_like(31.0, rate), rate)
    with soundfile.SoundFile(path) as sound:
        header = sound.frames
    decoded = soundfile.read(path, dtype="float32", always_2d=True)[0].mean(axis=1)  # the decoder's whole output
    info = audio_info(path)
    assert info["frames"] == len(decoded) and not info["truncated"], (header, info)
    assert abs(len(decoded) - 31.0 * rate) < 0.01 * 31.0 * rate
    waveform = load_audio(path, sample_rate=rate)
    np.testing.assert_allclose(waveform, decoded, atol=1e-6)
    # Windows read after a seek equal the whole decode: the frames after a seek are decoded with context.
    for start in np.random.default_rng(0).integers(0, len(decoded) - 4000, 12):
        window = load_window(path, int(start), int(start) + 4000, len(decoded), sample_rate=rate, info=info)
        np.testing.assert_allclose(window, decoded[start:start + 4000], atol=1e-6)


def test_a_header_that_promises_more_than_decodes_is_not_truncation(tmp_path):
    """sox/LAME MP3s without a Xing tag: the header's length is an estimate, thousands of frames long."""
    import soundfile

    path = sox_mp3(tmp_path / "speech.mp3", speech_like(40.0, 22050), 22050)
    with soundfile.SoundFile(path) as sound:
        header = sound.frames
    info = audio_info(path)
    assert header > info["frames"] and not info["truncated"]  # the case the rule is for
    assert len(load_audio(path, sample_rate=22050)) == info["frames"]
    tail = load_audio(path, sample_rate=22050, offset=35.0)
    assert len(tail) == info["frames"] - 35 * 22050


def test_a_really_truncated_mp3_keeps_its_decoded_part(tmp_path):
    path = write(tmp_path / "speech.mp3", speech_like(30.0, 22050), 22050, format="MP3")  # with its Xing tag
    data = open(path, "rb").read()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: len(data) // 2])
    info = audio_info(cut)
    assert info["truncated"] and 10.0 < info["duration"] < 20.0
    with pytest.raises(AudioDecodeError, match="truncated file"):
        load_audio(cut)
    kept = load_audio(cut, sample_rate=22050, keep_truncated=True)
    assert len(kept) == info["frames"]
    whole = load_audio(path, sample_rate=22050)
    np.testing.assert_allclose(kept[:22050], whole[:22050], atol=1e-6)
