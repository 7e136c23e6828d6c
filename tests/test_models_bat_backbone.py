import warnings

import keras
import numpy as np
import pytest
from helpers import load_parity, max_abs_error, parity_path, to_numpy

from keras_bat.models.bat import load_official_weights
from keras_bat.models import BATBackbone
from keras_bat.models.backbone import RandomWeightsWarning


@pytest.fixture(scope="module")
def encoder_outputs():
    return load_parity("encoder_outputs.safetensors")


@pytest.fixture
def official_backbone(tiny_config):
    backbone = BATBackbone(**tiny_config)
    return load_official_weights(backbone, parity_path("encoder_weights.safetensors"))


@pytest.fixture
def backbone(tiny_config):
    """The fixtures' architecture with random weights, for tests that need no official outputs."""
    keras.utils.set_random_seed(3)
    return BATBackbone(**tiny_config)


@pytest.fixture(scope="module")
def spectrograms():
    rng = np.random.default_rng(0)
    return {"short": rng.uniform(size=(2, 256, 128)).astype("float32"),  # 16 time patches
            "long": rng.uniform(size=(2, 1280, 128)).astype("float32")}  # chunks of 64 + 16 patches


def to_reference_layout(outputs):
    """(B, L, D) and (B, L, T, F, D) -> the fixtures' (L, B, D) and (L, B, D, T, F)."""
    return (to_numpy(outputs["cls_tokens"]).transpose(1, 0, 2),
            to_numpy(outputs["patch_tokens"]).transpose(1, 0, 4, 2, 3))


def test_position_table_matches_official(tiny_config, encoder_outputs):
    backbone = BATBackbone(**tiny_config)
    assert max_abs_error(backbone.chunk_tokens.pos_embed, encoder_outputs["pos_embed"][0]) == 0.0


def test_encoder_matches_official(official_backbone, encoder_outputs):
    cls, patches = to_reference_layout(official_backbone(encoder_outputs["input"][:, 0]))
    assert max_abs_error(cls, encoder_outputs["cls_tokens"]) <= 1e-4
    assert max_abs_error(patches, encoder_outputs["patch_tokens"]) <= 1e-4


def test_long_input_is_chunked_like_official(official_backbone, encoder_outputs):
    # 1280 frames = 80 time patches = chunks of 64 and 16.
    cls, patches = to_reference_layout(official_backbone(encoder_outputs["input_long"][:, 0]))
    assert max_abs_error(cls, encoder_outputs["cls_tokens_long"]) <= 1e-4
    assert max_abs_error(patches, encoder_outputs["patch_tokens_long"]) <= 1e-4


def test_compiled_predict_equals_eager(backbone, spectrograms):
    x = spectrograms["short"]
    eager = backbone(x)
    compiled = backbone.predict(x, batch_size=2, verbose=0)
    for key in ("cls_tokens", "patch_tokens"):
        assert max_abs_error(compiled[key], eager[key]) <= 1e-5


def test_padding_mask_equals_cropped_input(tiny_config, backbone, spectrograms):
    masked = BATBackbone(**tiny_config, use_padding_mask=True)
    masked.set_weights(backbone.get_weights())
    x = spectrograms["short"]  # 256 frames = 16 time patches
    mask = np.ones(x.shape[:2], "float32")
    full = backbone(x)
    out = masked({"spectrogram": x, "padding_mask": mask})
    assert max_abs_error(out["patch_tokens"], full["patch_tokens"]) <= 1e-5

    # The last 64 frames are padding: the first 12 time patches and the class
    # tokens equal those of the 192-frame crop, whatever the padding holds.
    mask[:, 192:] = 0
    noisy = x.copy()
    noisy[:, 192:] = np.random.default_rng(0).uniform(size=noisy[:, 192:].shape)
    out = masked({"spectrogram": noisy, "padding_mask": mask})
    cropped = backbone(x[:, :192])
    assert max_abs_error(out["cls_tokens"], cropped["cls_tokens"]) <= 1e-5
    assert max_abs_error(out["patch_tokens"][:, :, :12], cropped["patch_tokens"]) <= 1e-5


def test_padding_mask_skips_empty_chunks(tiny_config, backbone, spectrograms):
    masked = BATBackbone(**tiny_config, use_padding_mask=True)
    masked.set_weights(backbone.get_weights())
    x = spectrograms["long"]  # 1280 frames: chunks of 64 + 16 patches
    mask = np.zeros(x.shape[:2], "float32")
    mask[:, :1024] = 1  # the second chunk is all padding
    out = masked({"spectrogram": x, "padding_mask": mask})
    first_chunk = backbone(x[:, :1024])
    assert max_abs_error(out["cls_tokens"], first_chunk["cls_tokens"]) <= 1e-5


@pytest.mark.parametrize("frames", [250, 17])
def test_rejects_frames_not_multiple_of_patch(tiny_config, frames):
    backbone = BATBackbone(**tiny_config)
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        backbone(np.zeros((1, frames, 128), "float32"))


def test_rejects_wrong_mel_bins(tiny_config):
    backbone = BATBackbone(**tiny_config)
    with pytest.raises(ValueError, match=r"expected shape=\(None, None, 128\), found shape=\(1, 256, 64\)"):
        backbone(np.zeros((1, 256, 64), "float32"))


def test_keras_file_round_trip(tiny_config, tmp_path, spectrograms):
    backbone = BATBackbone(**tiny_config, dropout=0.1, drop_path_rate=0.1)
    x = spectrograms["short"]
    expected = backbone(x)
    path = tmp_path / "backbone.keras"
    backbone.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, BATBackbone)
    assert restored.get_config() == backbone.get_config()
    out = restored(x)
    for key in ("cls_tokens", "patch_tokens"):
        np.testing.assert_array_equal(to_numpy(out[key]), to_numpy(expected[key]))


def test_no_gate_option_equals_a_fully_open_gate(tiny_config):
    """Without the gate, attention is the gated attention with sigmoid(gate) = 1 (a bias of 100)."""
    ungated = BATBackbone(**tiny_config, use_gate=False)
    gated = BATBackbone(**tiny_config)
    assert all(block.attn.gate is None for block in ungated.blocks)
    x = np.random.default_rng(0).uniform(size=(1, 32, 128)).astype("float32")
    ungated(x)
    gated(x)
    ungated_weights = {v.path: v for v in ungated.weights}
    for variable in gated.weights:
        if "/gate/" in variable.path:
            variable.assign(np.full(variable.shape, 100.0 if variable.path.endswith("bias") else 0.0, "float32"))
        else:
            variable.assign(ungated_weights[variable.path])
    expected, out = gated(x), ungated(x)
    assert out["patch_tokens"].shape == (1, 3, 2, 8, 64)
    for key in ("cls_tokens", "patch_tokens"):
        np.testing.assert_allclose(to_numpy(out[key]), to_numpy(expected[key]), atol=1e-5)
    gated.blocks[0].attn.gate.bias.assign(np.zeros(64, "float32"))  # a half-open gate changes the output
    assert not np.allclose(to_numpy(gated(x)["cls_tokens"]), to_numpy(out["cls_tokens"]), atol=1e-3)


def test_mixed_bfloat16_stays_close_to_float32(backbone, tiny_config, spectrograms):
    x = spectrograms["short"]
    half = BATBackbone(**tiny_config, dtype="mixed_bfloat16")
    half.set_weights(backbone.get_weights())
    out = half(x)
    assert keras.backend.standardize_dtype(out["cls_tokens"].dtype) == "bfloat16"
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in half.weights)
    reference = backbone(x)
    # Post-norm tokens have unit scale; bfloat16 keeps about 3 significant digits.
    assert max_abs_error(out["cls_tokens"], reference["cls_tokens"]) < 0.15
    assert np.mean(np.abs(to_numpy(out["patch_tokens"]) - to_numpy(reference["patch_tokens"]))) < 0.02


def test_presets_build_paper_architectures():
    presets = BATBackbone.presets  # a class property, as in keras-hub
    assert set(presets) == {"bat_small", "bat_base", "bat_large", "eat_base", "sslam_base", "bat_base_as2m"}
    assert "ViT-B/16" in presets["bat_base"]["description"] and presets["bat_base"]["weights"] is None
    assert presets["bat_base"]["config"] == {"dim": 768, "depth": 12, "num_heads": 12}
    with pytest.warns(RandomWeightsWarning, match="RANDOM weights.*load_official_weights"):
        small = BATBackbone.from_preset("bat_small", depth=1)
    assert (small.dim, small.num_heads, small.depth) == (384, 6, 1)
    with pytest.warns(RandomWeightsWarning, match="load_eat_weights"):
        BATBackbone.from_preset("eat_base", depth=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # random weights asked for: no warning
        base = BATBackbone.from_preset("bat_base", load_weights=False)
    d = 768  # per block: qkv, gate, proj, fc1, fc2, two LayerNorms
    block = (d * 3 * d + 3 * d) + 2 * (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d) + 4 * d
    patch_embed, cls_token, pre_norm = 16 * 16 * d + d, d, 2 * d
    trainable = sum(int(np.prod(w.shape)) for w in base.trainable_weights)
    assert trainable == 12 * block + patch_embed + cls_token + pre_norm == 92_341_248
    with pytest.raises(ValueError, match="Unknown preset"):
        BATBackbone.from_preset("bat_huge")


def test_preset_directory_round_trip(backbone, tmp_path, spectrograms):
    backbone.save_to_preset(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a directory with weights: no random-weights warning
        restored = BATBackbone.from_preset(str(tmp_path))
    x = spectrograms["short"]
    np.testing.assert_array_equal(to_numpy(restored(x)["cls_tokens"]), to_numpy(backbone(x)["cls_tokens"]))


def test_fit_trains_backbone_and_head(tiny_config):
    rng = np.random.default_rng(0)
    y = np.arange(8) % 2
    x = 0.2 * rng.uniform(size=(8, 64, 128)).astype("float32")
    x[y == 1, :, 64:] += 0.8  # class 1 is loud in the upper half of the mel bins
    backbone = BATBackbone(**{**tiny_config, "depth": 2}, dropout=0.1, drop_path_rate=0.1)
    inputs = keras.Input((64, 128))
    features = backbone(inputs)["cls_tokens"][:, -1]
    model = keras.Model(inputs, keras.layers.Dense(2)(features))
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [to_numpy(w) for w in backbone.trainable_weights]
    loss_before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=4, epochs=10, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.8 * loss_before
    after = [to_numpy(w) for w in backbone.trainable_weights]
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))
    np.testing.assert_array_equal(to_numpy(backbone.chunk_tokens.pos_embed),
                                  to_numpy(BATBackbone(**tiny_config).chunk_tokens.pos_embed))
