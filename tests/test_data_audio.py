"""Decoding: formats, resampling, mix-down, segments, and every kind of bad file."""

import numpy as np
import pytest

from audio_files import bad_files, tone, write
from keras_bat.data import AudioDecodeError, audio_info, load_audio, resample

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
    assert audio_info(path) == {"sample_rate": 16000, "frames": 48000, "channels": 1, "duration": 3.0}
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
