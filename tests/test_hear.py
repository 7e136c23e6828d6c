"""The HEAR 2021 API (keras_bat.hear) and hearvalidator on it."""

import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import IN_CI, to_numpy

from keras_bat import hear
from keras_bat.convert.checkpoints import save_official_weights
from keras_bat.models import AudioEmbedder, BATBackbone

TINY = {"dim": 32, "depth": 2, "num_heads": 4}


@pytest.fixture
def preset(tmp_path):
    BATBackbone(**TINY).save_to_preset(tmp_path / "preset")
    return str(tmp_path / "preset")


def test_timestamp_embeddings_follow_the_patches_and_mix_the_blocks(preset):
    audio = np.random.default_rng(0).uniform(-1, 1, size=(3, 20000)).astype("float32")
    model = hear.load_model(preset, layers="last", scene_pooling="mean", batch_size=2)
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    assert isinstance(embeddings, type(keras.ops.ones(1)))  # the backend's tensors
    embeddings, timestamps = to_numpy(embeddings), to_numpy(timestamps)
    # 20000 samples: 126 frames (centred STFT, 160-sample hop) -> 8 time patches of 16 frames.
    assert embeddings.shape == (3, 8, 32) and embeddings.dtype == np.float32 and timestamps.shape == (3, 8)
    np.testing.assert_allclose(timestamps[1], 75.0 + 160.0 * np.arange(8))  # centre of frames 16t..16t+15, in ms
    # The last block's patch tokens averaged over frequency, on frames zero-padded to 128.
    embedder = hear._embedder(model)
    spectrogram = np.pad(to_numpy(embedder.frontend(audio)), [(0, 0), (0, 2), (0, 0)])
    patches = to_numpy(embedder.backbone(spectrogram)["patch_tokens"])  # B, L, T, F, D
    np.testing.assert_allclose(embeddings, patches[:, -1].mean(axis=2), atol=1e-5)
    scene = to_numpy(hear.get_scene_embeddings(audio, model))
    np.testing.assert_allclose(scene, embeddings.mean(axis=1), atol=1e-5)  # scene_pooling="mean"

    mixed = hear.load_model(preset, layers="mean", scene_pooling="cls")
    cls_tokens = to_numpy(embedder.backbone(spectrogram)["cls_tokens"])
    np.testing.assert_allclose(to_numpy(hear.get_scene_embeddings(audio, mixed)), cls_tokens.mean(axis=1), atol=1e-5)


def test_any_length_batched_and_silence(preset):
    model = hear.load_model(preset, batch_size=2)
    assert (model.sample_rate, model.scene_embedding_size, model.timestamp_embedding_size) == (16000, 32, 32)
    audio = np.zeros((3, 16000 * 12), "float32")  # 12 s: two chunks of the encoder
    audio[1] = np.random.default_rng(1).uniform(-1, 1, size=audio.shape[1])
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    assert tuple(embeddings.shape) == (3, 75, 32)  # 1201 frames -> 75 patches (the lone last frame cropped)
    assert np.isfinite(to_numpy(embeddings)).all()  # silence included
    np.testing.assert_allclose(to_numpy(hear.get_scene_embeddings(audio, model))[1:2],
                               to_numpy(hear.get_scene_embeddings(audio[1:2], model)), atol=1e-5)
    with pytest.raises(ValueError, match=r"\(n_sounds, n_samples\)"):
        hear.get_scene_embeddings(audio[0], model)


def test_load_model_reads_checkpoints_and_keras_files(preset, tmp_path):
    backbone = BATBackbone.from_preset(preset)
    save_official_weights(backbone, str(tmp_path / "encoder.safetensors"), backbone.official_parameters())
    from_checkpoint = hear.load_model(str(tmp_path / "encoder.safetensors"), preset=preset)
    audio = np.random.default_rng(2).uniform(-1, 1, size=(2, 8000)).astype("float32")
    expected = to_numpy(hear.get_scene_embeddings(audio, hear.load_model(preset)))
    np.testing.assert_allclose(to_numpy(hear.get_scene_embeddings(audio, from_checkpoint)), expected, atol=1e-6)
    AudioEmbedder(backbone).save(tmp_path / "embedder.keras")
    from_keras = hear.load_model(str(tmp_path / "embedder.keras"))
    np.testing.assert_allclose(to_numpy(hear.get_scene_embeddings(audio, from_keras)), expected, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="neither a preset name"):
        hear.load_model(str(tmp_path / "missing.pt"))


def test_hearvalidator_passes(preset):
    if keras.backend.backend() == "jax":
        pytest.skip("hearvalidator checks torch and TensorFlow models; the torch and TensorFlow runs validate")
    try:
        import hearvalidator  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("hearvalidator is not installed")
        pytest.skip("hearvalidator is not installed (pip install -e '.[hear]')")
    commands = [[sys.executable, "-m", "keras_bat", "hear-validate", "-m", preset, "-d", "cpu"]]
    if keras.backend.backend() == "tensorflow":  # the validator's own entry point too (under torch see docs/hear.md)
        commands.append([sys.executable, "-m", "hearvalidator.validate", "keras_bat.hear", "-m", preset])
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "Received embedding of shape: (8, 32)" in result.stdout.replace("torch.Size([8, 32])", "(8, 32)")
