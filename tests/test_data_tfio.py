"""tensorflow-io's decoders give the samples libsndfile gives (the `[tfio]` stack)."""

import numpy as np
import pytest

from audio_files import bad_files, tone, write
from keras_bat.data import AudioDecodeError, Clip, AudioDataset, load_audio, make_pipeline

tfio = pytest.importorskip("tensorflow_io", reason="tensorflow-io is tested in the [tfio] stack (see .ci/run)")

FORMATS = [("wav", {"subtype": "PCM_16"}), ("wav", {"subtype": "PCM_24"}), ("wav", {"subtype": "FLOAT"}),
           ("flac", {}), ("ogg", {"format": "OGG"}), ("mp3", {"format": "MP3"})]


@pytest.mark.parametrize("rate", [16000, 44100])
@pytest.mark.parametrize("extension,options", FORMATS)
def test_tfio_decoding_equals_soundfile(tmp_path, extension, options, rate):
    rng = np.random.default_rng(0)
    samples = np.stack([tone(1.0, rate), 0.1 * rng.normal(size=rate).astype("float32")], axis=1)
    path = write(tmp_path / f"clip.{extension}", samples, rate, **options)
    reference = load_audio(path, offset=0.25, duration=0.5)
    decoded = load_audio(path, offset=0.25, duration=0.5, decoder="tfio")
    assert decoded.shape == reference.shape
    np.testing.assert_allclose(decoded, reference, atol=1e-6)  # docs/command_line.md: the same samples within 1e-6


@pytest.mark.parametrize("kind", ["file not found", "empty file", "corrupt header", "not audio", "NaN samples",
                                  "silent", "odd sample rate", "too long"])
def test_tfio_bad_files_raise_an_error_naming_the_file(tmp_path, kind):
    path = bad_files(tmp_path)[kind]
    with pytest.raises(AudioDecodeError) as error:
        load_audio(path, max_duration=10.0, decoder="tfio")
    assert path in str(error.value)


def test_tfio_pipeline_equals_soundfile_pipeline(tmp_path):
    paths = [write(tmp_path / f"{i}.flac", tone(1.0 + i / 4, 22050, 300.0 * (i + 1)), 22050) for i in range(4)]
    dataset = AudioDataset([Clip(p, i % 2) for i, p in enumerate(paths)], "multiclass", ["a", "b"])
    batches = {decoder: list(make_pipeline(dataset, 2, 1.5, training=False, decoder=decoder))
               for decoder in ("soundfile", "tfio")}
    for (x, y), (x_tfio, y_tfio) in zip(batches["soundfile"], batches["tfio"]):
        np.testing.assert_allclose(x_tfio.numpy(), x.numpy(), atol=1e-6)
        np.testing.assert_array_equal(y_tfio.numpy(), y.numpy())
