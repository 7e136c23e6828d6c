"""A checkpoint of the official pretraining on 2.56 s clips (`../shared/parity/short/`):
its position table is built for the 16 x 8 patch grid, not the first rows of
the 64 x 8 one. keras-bat builds the same table, loads the checkpoint, computes
the official teacher's features, encodes longer inputs in chunks of that
length, and probes with it."""

import json

import numpy as np
import pytest
from helpers import load_parity, parity_path, require_module, to_numpy

from keras_bat.models.bat import checkpoint_time_patches, load_official_pretrainer_weights, load_official_weights
from keras_bat.convert import read_state_dict
from keras_bat.layers.position import sincos_position_table
from keras_bat.models import BATBackbone, BATPretrainer

SHORT = {"dim": 64, "depth": 2, "num_heads": 4}


@pytest.fixture(scope="module")
def checkpoint():
    require_module("torch")  # reading .pt checkpoints needs torch
    return parity_path("official_pretrain_256frames.pt", "short")


@pytest.fixture(scope="module")
def outputs():
    return load_parity("short_outputs.safetensors", "short")


def test_short_table_is_the_official_one_and_not_a_prefix(outputs):
    table = sincos_position_table(64, 8, 16)
    np.testing.assert_allclose(table, outputs["pos_embed"][0], atol=1e-6)
    assert np.abs(sincos_position_table(64, 8, 64)[:128] - table).max() > 0.1


def test_checkpoint_reproduces_the_official_teacher_features(checkpoint, outputs):
    state = read_state_dict(checkpoint, "ema_encoder")
    assert checkpoint_time_patches(state) == 16
    backbone = load_official_weights(BATBackbone(**SHORT, chunk_time_patches=16), state)
    spectrogram = outputs["input"][:, 0]  # B, time, mel
    features = backbone(spectrogram)
    patches = to_numpy(features["patch_tokens"])  # B, L, T, F, D
    expected = np.transpose(outputs["patch_tokens"], (1, 0, 2, 3)).reshape(patches.shape)  # time-major
    assert np.abs(patches - expected).max() <= 1e-4
    assert np.abs(to_numpy(features["cls_tokens"])[:, -1] - outputs["last_cls_token"]).max() <= 1e-4


def test_a_1024_frame_backbone_says_how_to_load_it(checkpoint):
    backbone = BATBackbone(**SHORT)
    with pytest.raises(ValueError, match=r"16 x 8 patch grid \(256 frames.*chunk_time_patches=16"):
        load_official_weights(backbone, checkpoint, checkpoint_key="ema_encoder")


def test_longer_inputs_are_encoded_in_chunks_of_the_pretraining_length():
    backbone = BATBackbone(**SHORT, chunk_time_patches=16)
    spectrogram = np.random.default_rng(0).uniform(size=(1, 512, 128)).astype("float32")
    whole = backbone(spectrogram)
    halves = [backbone(spectrogram[:, i * 256:(i + 1) * 256]) for i in range(2)]
    np.testing.assert_allclose(to_numpy(whole["cls_tokens"]),
                               (to_numpy(halves[0]["cls_tokens"]) + to_numpy(halves[1]["cls_tokens"])) / 2,
                               atol=1e-5)
    np.testing.assert_allclose(to_numpy(whole["patch_tokens"]),
                               np.concatenate([to_numpy(h["patch_tokens"]) for h in halves], axis=2), atol=1e-5)


def test_pretraining_below_1024_frames_uses_the_official_table(checkpoint, outputs):
    pretrainer = BATPretrainer(encoder=SHORT, decoder_depth=1, decoder_heads=4, time_frames=256, num_views=2)
    for encoder in (pretrainer.student, pretrainer.teacher):
        assert encoder.chunk_time_patches == 16
        np.testing.assert_allclose(to_numpy(encoder.chunk_tokens.pos_embed), outputs["pos_embed"][0], atol=1e-6)
    steps = load_official_pretrainer_weights(pretrainer, checkpoint)
    assert steps == 6
    teacher = pretrainer.export_backbone("teacher")
    patches = to_numpy(teacher(outputs["input"][:, 0])["patch_tokens"])
    expected = np.transpose(outputs["patch_tokens"], (1, 0, 2, 3)).reshape(patches.shape)
    assert np.abs(patches - expected).max() <= 1e-4


def test_the_checkpoint_probes_without_editing(checkpoint, tmp_path):
    from keras_bat.cli import main

    out = tmp_path / "probe"
    main(["probe", "--set", "model.backbone={dim: 64, depth: 2, num_heads: 4}", f"model.weights={checkpoint}",
          "model.checkpoint_key=ema_encoder", "model.time_frames=256", "data.clip_seconds=2.56",
          "data.options={splits: {train: 8, test: 4}, clip_seconds: 2.56}", "train.batch_size=4",
          "train.steps=2", "train.steps_per_epoch=1", "train.warmup_steps=1", "train.verbose=0",
          "head.num_prototypes=8", "data.num_workers=2", f"output_dir={out}"])
    results = json.loads((out / "results.json").read_text())
    assert results["eval_clips"] == 4 and len(results["layer_weights"]) == 2
