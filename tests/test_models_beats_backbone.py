"""BEATsBackbone against the official BEATs forward pass (`../shared/parity/peer/`)."""

import json

import keras
import numpy as np
import pytest
from helpers import load_parity, max_abs_error, parity_path, require_module, to_numpy

from keras_bat.models.beats.beats_convert import beats_parameters, load_beats_weights
from keras_bat.heads import VQTHead
from keras_bat.models.beats.beats_layers import relative_position_buckets
from keras_bat.models.beats import BEATsBackbone
from keras_bat.models.backbone import RandomWeightsWarning

TINY = {"dim": 64, "depth": 3, "num_heads": 4, "ffn_dim": 128, "embed_dim": 48, "conv_pos": 16,
        "conv_pos_groups": 4}


def tiny_beats(**overrides):
    config = json.loads(parity_path("peer_config.json", "peer").read_text())
    beats = config["beats"]
    assert (config["dim"], config["depth"], config["num_heads"]) == (TINY["dim"], TINY["depth"], TINY["num_heads"])
    assert (beats["embed"], beats["ffn"], beats["conv_pos"], beats["conv_pos_groups"]) == (
        TINY["embed_dim"], TINY["ffn_dim"], TINY["conv_pos"], TINY["conv_pos_groups"])
    return BEATsBackbone(**TINY, **overrides)


@pytest.fixture(scope="module")
def outputs():
    return load_parity("beats_outputs.safetensors", "peer")


@pytest.fixture(scope="module")
def checkpoint():
    require_module("torch")  # the checkpoint is a PyTorch file
    return parity_path("beats_checkpoint.pt", "peer")


@pytest.mark.parametrize("suffix", ["", "_long"])
def test_beats_encoder_matches_official(outputs, checkpoint, suffix):
    backbone = load_beats_weights(tiny_beats(), checkpoint)
    features = backbone(outputs["input" + suffix][:, 0])
    assert max_abs_error(features["cls_tokens"], np.transpose(outputs["cls_tokens" + suffix], (1, 0, 2))) <= 1e-4
    expected = np.transpose(outputs["patch_tokens" + suffix], (1, 0, 3, 4, 2))  # B, L, T, F, D
    assert max_abs_error(features["patch_tokens"], expected) <= 1e-4


def test_beats_query_tokens_match_official_vqt(outputs, checkpoint):
    backbone = load_beats_weights(tiny_beats(num_query_tokens=2), checkpoint)
    head = VQTHead(num_classes=3, depth=3, dim=64, num_query_tokens=2)
    head.query_tokens.assign(outputs["vqt_tokens"])
    spectrogram = keras.ops.convert_to_tensor(outputs["input"][:, 0])
    features = backbone({"spectrogram": spectrogram, "query_tokens": head.batch_query_tokens(len(spectrogram))})
    assert max_abs_error(head.features(features), outputs["vqt_features"]) <= 1e-4
    # Query tokens are not keys: the patch tokens are those of the plain encoder.
    plain = load_beats_weights(tiny_beats(), checkpoint)(spectrogram)
    assert max_abs_error(features["patch_tokens"], plain["patch_tokens"]) <= 1e-5


def test_beats_checkpoint_round_trip_and_errors(checkpoint):
    backbone = load_beats_weights(tiny_beats(), checkpoint)
    official = {name: param.to_official(to_numpy(param.variable)) for name, param in
                beats_parameters(backbone).items()}
    restored = load_beats_weights(tiny_beats(), official)
    x = np.random.default_rng(0).normal(size=(1, 128, 128)).astype("float32")
    np.testing.assert_array_equal(to_numpy(restored(x)["cls_tokens"]), to_numpy(backbone(x)["cls_tokens"]))
    broken = dict(official, **{"encoder.layers.2.self_attn.relative_attention_bias.weight":
                               official["encoder.layers.0.self_attn.relative_attention_bias.weight"] + 1})
    with pytest.raises(ValueError, match="relative_attention_bias"):
        load_beats_weights(tiny_beats(), broken)
    with pytest.raises(ValueError, match=r"missing keys.*encoder\.layers\.3\.fc1\.weight"):
        load_beats_weights(BEATsBackbone(**{**TINY, "depth": 4}), checkpoint)


def test_beats_backbone_config_and_keras_file(tmp_path):
    backbone = BEATsBackbone(dim=32, depth=2, num_heads=2, ffn_dim=64, embed_dim=16, conv_pos=8, conv_pos_groups=2)
    restored = BEATsBackbone.from_config(backbone.get_config())
    assert restored.get_config() == backbone.get_config()
    x = np.random.default_rng(0).normal(size=(2, 48, 128)).astype("float32")
    assert to_numpy(backbone(x)["patch_tokens"]).shape == (2, 2, 3, 8, 32)
    backbone.save(tmp_path / "beats.keras")
    loaded = keras.saving.load_model(tmp_path / "beats.keras")
    np.testing.assert_allclose(to_numpy(loaded(x)["cls_tokens"]), to_numpy(backbone(x)["cls_tokens"]), atol=1e-6)
    assert backbone.make_frontend(256).window == "povey"


def test_relative_buckets_are_symmetric_and_saturate():
    buckets = relative_position_buckets(600, 600)
    assert buckets[0, 0] == 0 and buckets[1, 0] == 1 and buckets[0, 1] == 161  # past / future halves
    np.testing.assert_array_equal(buckets - 160 * (buckets >= 160), (buckets - 160 * (buckets >= 160)).T)
    # Offsets beyond max_distance (800) share the last bucket of their direction.
    future, past = relative_position_buckets(1, 1000)[0], relative_position_buckets(1000, 1)[:, 0]
    assert future[400] < 319 and set(future[800:]) == {319} and set(past[800:]) == {159}
    assert np.all(np.diff(future[1:]) >= 0)


def test_beats_presets(checkpoint, tmp_path):
    assert set(BEATsBackbone.presets) == {"beats_iter3"}
    with pytest.warns(RandomWeightsWarning, match="load_beats_weights"):
        BEATsBackbone.from_preset("beats_iter3", depth=1)
    backbone = load_beats_weights(tiny_beats(), checkpoint)
    backbone.save_to_preset(str(tmp_path / "beats"))
    restored = BEATsBackbone.from_preset(str(tmp_path / "beats"))
    x = np.random.default_rng(1).normal(size=(1, 64, 128)).astype("float32")
    np.testing.assert_array_equal(to_numpy(restored(x)["patch_tokens"]), to_numpy(backbone(x)["patch_tokens"]))
    with pytest.raises(ValueError, match="Unknown preset"):
        BEATsBackbone.from_preset("beats_iter9")
