"""EAT / SSLAM checkpoints (fairseq layout) against the official code's
forward pass (`../shared/parity/peer/`)."""

import numpy as np
import pytest
from helpers import load_parity, max_abs_error, parity_path, require_module

from keras_bat.models.bat.eat_convert import load_eat_weights
from keras_bat.layers import KaldiFbank, LogMelSpectrogram
from keras_bat.models import BATBackbone


@pytest.fixture(scope="module")
def eat_backbone():
    require_module("torch")  # the checkpoint is a PyTorch file
    backbone = BATBackbone(dim=64, depth=3, num_heads=4, use_gate=False)
    return load_eat_weights(backbone, parity_path("eat_checkpoint.pt", "peer"))


def official_features(outputs, suffix=""):
    """The fixture's `(L, B, D)` / `(L, B, D, T, F)` layout -> the backbone's."""
    return (np.transpose(outputs["cls_tokens" + suffix], (1, 0, 2)),
            np.transpose(outputs["patch_tokens" + suffix], (1, 0, 3, 4, 2)))


@pytest.mark.parametrize("suffix", ["", "_long"])
def test_eat_encoder_matches_official(eat_backbone, suffix):
    outputs = load_parity("eat_outputs.safetensors", "peer")
    features = eat_backbone(outputs["input" + suffix][:, 0])
    cls_tokens, patch_tokens = official_features(outputs, suffix)
    assert max_abs_error(features["cls_tokens"], cls_tokens) <= 1e-4
    assert max_abs_error(features["patch_tokens"], patch_tokens) <= 1e-4


def test_eat_checkpoint_errors_name_the_problem():
    require_module("torch")
    checkpoint = parity_path("eat_checkpoint.pt", "peer")
    with pytest.raises(ValueError, match="use_gate=False"):
        load_eat_weights(BATBackbone(dim=64, depth=3, num_heads=4), checkpoint)
    with pytest.raises(ValueError, match=r"missing keys.*blocks\.3\.norm1\.weight"):
        load_eat_weights(BATBackbone(dim=64, depth=4, num_heads=4, use_gate=False), checkpoint)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_eat_weights(BATBackbone(dim=32, depth=3, num_heads=4, use_gate=False), checkpoint)


def test_eat_and_sslam_presets_carry_their_frontend(tmp_path):
    for name in ("eat_base", "sslam_base"):
        config = BATBackbone.preset_config(name)
        assert config["use_gate"] is False and config["frontend"] == name.split("_")[0]
    backbone = BATBackbone(dim=64, depth=1, num_heads=4, use_gate=False, frontend="sslam")
    frontend = backbone.make_frontend(time_frames=256, dataset="esc50")
    assert isinstance(frontend, KaldiFbank) and frontend.time_frames == 256
    assert (frontend.mean, frontend.std, frontend.window) == (-6.85408831, 5.39770323, "hanning")
    backbone.save_to_preset(str(tmp_path / "sslam"))
    assert BATBackbone.from_preset(str(tmp_path / "sslam")).frontend == "sslam"
    assert isinstance(BATBackbone(dim=64, depth=1, num_heads=4).make_frontend(256), LogMelSpectrogram)
    with pytest.raises(ValueError, match="frontend"):
        BATBackbone(dim=64, depth=1, num_heads=4, frontend="mfcc")
