import json

import numpy as np
import pytest
from helpers import load_parity, parity_path, require_module, to_numpy

from keras_bat.convert import read_state_dict, save_official_weights
from keras_bat.models.bat import backbone_parameters, load_official_weights
from keras_bat.models import BATBackbone, EncoderModel


def official_arrays(backbone):
    """The backbone's weights in the official layout, by official name."""
    return {name: param.to_official(to_numpy(param.variable))
            for name, param in backbone_parameters(backbone).items()}


def test_safetensors_load_every_parameter(tiny_config):
    weights = load_parity("encoder_weights.safetensors")
    backbone = load_official_weights(BATBackbone(**tiny_config), parity_path("encoder_weights.safetensors"))
    loaded = official_arrays(backbone)
    assert set(loaded) == set(weights)
    for name, value in weights.items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)


def test_official_pretrain_checkpoint_loads_student_and_teacher(tiny_config):
    require_module("torch")  # reading .pt checkpoints needs torch
    checkpoint = parity_path("official_pretrain_checkpoint.pt")
    student = load_parity("ssl_student_weights.safetensors")
    teacher = load_parity("ssl_teacher_weights.safetensors")
    for key, expected in ((None, student), ("ema_encoder", teacher)):
        backbone = load_official_weights(BATBackbone(**tiny_config), checkpoint, checkpoint_key=key)
        for name, value in official_arrays(backbone).items():
            np.testing.assert_array_equal(value, expected[f"encoder.{name}"], err_msg=f"{key}: {name}")
    assert not np.array_equal(student["encoder.blocks.0.attn.qkv.weight"],
                              teacher["encoder.blocks.0.attn.qkv.weight"])


def test_prefix_is_found_or_given(tiny_config):
    weights = load_parity("encoder_weights.safetensors")
    prefixed = {f"student.encoder.{k}": v for k, v in weights.items()}
    prefixed["student.decoder.mask_token"] = np.zeros((1, 1, 64), "float32")
    for prefix in (None, "student.encoder."):
        backbone = load_official_weights(BATBackbone(**tiny_config), prefixed, prefix=prefix)
        np.testing.assert_array_equal(to_numpy(backbone.chunk_tokens.cls_token), weights["cls_token"])
    with pytest.raises(ValueError, match="missing keys"):
        load_official_weights(BATBackbone(**tiny_config), prefixed, prefix="teacher.")


def test_student_file_with_decoder_loads_encoder(tiny_config):
    backbone = load_official_weights(BATBackbone(**tiny_config), parity_path("ssl_student_weights.safetensors"))
    student = load_parity("ssl_student_weights.safetensors")
    np.testing.assert_array_equal(official_arrays(backbone)["blocks.2.mlp.fc2.weight"],
                                  student["encoder.blocks.2.mlp.fc2.weight"])


def test_wrong_depth_lists_missing_keys(tiny_config):
    backbone = BATBackbone(**{**tiny_config, "depth": 4})
    before = to_numpy(backbone.blocks[0].attn.qkv.kernel)
    with pytest.raises(ValueError, match=r"missing keys.*'blocks\.3\.norm1\.weight'"):
        load_official_weights(backbone, parity_path("encoder_weights.safetensors"))
    np.testing.assert_array_equal(to_numpy(backbone.blocks[0].attn.qkv.kernel), before)  # untouched


def test_wrong_width_lists_shapes(tiny_config):
    backbone = BATBackbone(**{**tiny_config, "dim": 32})
    with pytest.raises(ValueError, match=r"'cls_token': checkpoint \(1, 1, 64\) vs model \(1, 1, 32\)"):
        load_official_weights(backbone, parity_path("encoder_weights.safetensors"))


def test_unexpected_keys_raise_unless_skipped(tiny_config):
    weights = dict(load_parity("encoder_weights.safetensors"))
    weights["head.fc.weight"] = np.zeros((5, 64), "float32")
    with pytest.raises(ValueError, match=r"unexpected keys.*'head\.fc\.weight'"):
        load_official_weights(BATBackbone(**tiny_config), weights)
    load_official_weights(BATBackbone(**tiny_config), weights, skip_unexpected=True)


def test_gateless_model_rejects_gated_checkpoint(tiny_config):
    with pytest.raises(ValueError, match=r"'blocks\.0\.attn\.gate\.weight'"):
        load_official_weights(BATBackbone(**tiny_config, use_gate=False), parity_path("encoder_weights.safetensors"))


def test_folder_checkpoint_and_config_check(tiny_config, tmp_path):
    source = load_official_weights(BATBackbone(**tiny_config), parity_path("encoder_weights.safetensors"))
    source.save_to_preset(tmp_path)
    source.export_official(tmp_path)  # beside the preset's config: checked against it
    backbone = load_official_weights(BATBackbone(**tiny_config), tmp_path)
    for name, value in load_parity("encoder_weights.safetensors").items():
        np.testing.assert_array_equal(official_arrays(backbone)[name], value, err_msg=name)
    config = json.loads((tmp_path / "config.json").read_text())
    config["config"]["num_heads"] = 8
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="num_heads: checkpoint 8 vs model 4"):
        load_official_weights(BATBackbone(**tiny_config), tmp_path)


def test_presets_load_without_a_converter_and_export_official_writes_the_official_names(tiny_config, tmp_path,
                                                                                       monkeypatch):
    official = load_parity("encoder_weights.safetensors")
    source = load_official_weights(BATBackbone(**tiny_config), parity_path("encoder_weights.safetensors"))
    source.save_to_preset(tmp_path / "preset")
    assert (tmp_path / "preset" / "model.weights.h5").is_file()
    assert not (tmp_path / "preset" / "model.safetensors").exists()

    def converter(*args):
        raise AssertionError("a converter on a preset's load path")

    with monkeypatch.context() as patched:
        patched.setattr(BATBackbone, "recognise_checkpoint", classmethod(converter))
        patched.setattr("keras_bat.models.bat.bat_convert.assign_parameters", converter)
        loaded = BATBackbone.from_preset(tmp_path / "preset")
    assert {name: value.tolist() for name, value in official_arrays(loaded).items()} == {
        name: value.tolist() for name, value in official.items()}
    # Official -> preset -> official is the identity, names and values.
    path = loaded.export_official(tmp_path / "bat.safetensors")
    exported = read_state_dict(path)
    assert sorted(exported) == sorted(official)
    for name, value in official.items():
        np.testing.assert_array_equal(exported[name], value, err_msg=name)
    # A folder holding the exported file alone is an official release to from_preset.
    (tmp_path / "release").mkdir()
    assert loaded.export_official(tmp_path / "release").endswith("release/model.safetensors")
    release = EncoderModel.from_preset(tmp_path / "release", num_heads=tiny_config["num_heads"])
    for name, value in official.items():
        np.testing.assert_array_equal(official_arrays(release)[name], value, err_msg=name)
    with pytest.raises(ValueError, match="writes a .safetensors file"):
        loaded.export_official(tmp_path / "bat.pt")


def test_the_export_command_writes_a_task_presets_encoder_under_the_official_names(tiny_config, tmp_path):
    from keras_bat.cli import run
    from keras_bat.heads import LinearHead
    from keras_bat.layers import LogMelSpectrogram
    from keras_bat.models import AudioClassifier

    backbone = load_official_weights(BATBackbone(**tiny_config), parity_path("encoder_weights.safetensors"))
    AudioClassifier(backbone, LinearHead(2), frontend=LogMelSpectrogram(time_frames=32)).save_to_preset(
        tmp_path / "task")
    assert run(["export", str(tmp_path / "task"), str(tmp_path / "bat.safetensors"), "--format", "official"]) == 0
    exported = read_state_dict(tmp_path / "bat.safetensors")
    for name, value in load_parity("encoder_weights.safetensors").items():
        np.testing.assert_array_equal(exported[name], value, err_msg=name)


def test_saved_weights_are_not_scrambled_by_transposes(tiny_config, tmp_path):
    backbone = BATBackbone(**tiny_config)
    save_official_weights(backbone, tmp_path / "model.safetensors")
    saved = read_state_dict(tmp_path / "model.safetensors")
    for name, value in official_arrays(backbone).items():
        np.testing.assert_array_equal(saved[name], value, err_msg=name)


def test_bad_sources_have_clear_errors(tmp_path, tiny_config):
    with pytest.raises(FileNotFoundError, match="No checkpoint file"):
        read_state_dict(tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="Could not read the safetensors file"):
        read_state_dict(corrupt)
    with pytest.raises(KeyError, match="no entry 'teacher'"):
        read_state_dict({"encoder": {}}, checkpoint_key="teacher")
