"""The contract of every registered encoder, head and frontend: a new family registered with
`register_encoder`, `register_head` or `register_frontend` gets these checks by adding its tiny
configuration below (the first test fails until it does).

- backbones: output specs of concrete and symbolic inputs, config round trip;
- precision: a mixed policy survives the config, `.keras` files, presets and task presets;
- quantization: `quantize` straight after `from_preset` (int8, float8), on the backbone and on
  a task model, quantized models through `.keras` files, presets and configs;
- task models: every encoder x every head, output specs and `.keras` round trip;
- LoRA: the factors on every attention projection train, nothing else of the encoder, and saved
  files hold the merged encoder;
- frontends: the frames streamed a window at a time equal the whole clip's.
"""

import functools

import keras
import numpy as np
import pytest
from helpers import assert_output_spec, to_numpy

from keras_bat.data.audio import waveform_window
from keras_bat.heads import (CGP, HEADS, ASRHead, Head2Toe, LayerMixedLinear, LinearHead, ProtoBin,
                             VQTHead)
from keras_bat.layers import FRONTENDS, LogMelSpectrogram, build_frontend
from keras_bat.models import AudioClassifier, BATBackbone, BEATsBackbone
from keras_bat.models.encoders import ENCODERS

SMALL = {"dim": 32, "depth": 2, "num_heads": 4}
TINY_BACKBONES = {BATBackbone: SMALL,
                  BEATsBackbone: {**SMALL, "ffn_dim": 64, "embed_dim": 16, "conv_pos": 8, "conv_pos_groups": 2}}
# name -> (tiny head, task, query tokens the backbone must carry)
TINY_HEADS = {
    "cgp": (lambda: CGP(2, 8), "multiclass", 0),
    "linear": (lambda: LinearHead(2, "mean"), "multiclass", 0),
    "lcgp": (lambda: LayerMixedLinear(2), "multiclass", 0),
    "h2t": (lambda: Head2Toe(2, "cls"), "multilabel", 0),
    "pb": (lambda: ProtoBin(2, 8), "multiclass", 0),
    "vqt": (lambda: VQTHead(2, depth=2, dim=32, num_query_tokens=3), "multiclass", 3),
    "asr": (lambda: ASRHead(6, lstm_units=8), "ctc", 0),
}
QUANTIZATION = {"int8": 0.05, "float8": 0.2}  # mode -> largest error relative to the float outputs' largest


def tiny_backbone(encoder, **kwargs):
    entry = ENCODERS[encoder]
    return entry.backbone_class(**TINY_BACKBONES[entry.backbone_class], **entry.fixed_arguments, **kwargs)


def spectrograms(batch=2, frames=32):
    return np.random.default_rng(0).uniform(size=(batch, frames, 128)).astype("float32")


def numpy_outputs(outputs):
    return keras.tree.map_structure(to_numpy, outputs)


def assert_close(actual, expected, relative):
    for key in expected:
        scale = np.abs(expected[key]).max()
        np.testing.assert_allclose(to_numpy(actual[key]), expected[key], atol=relative * scale, err_msg=key)


def test_every_registered_family_has_a_tiny_configuration():
    classes = {entry.backbone_class for entry in ENCODERS.values()}
    assert not classes - set(TINY_BACKBONES), "add the new backbone class's tiny configuration to TINY_BACKBONES"
    assert set(HEADS) == set(TINY_HEADS), "add the new head's tiny configuration to TINY_HEADS"


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_backbone_contract(encoder):
    backbone = tiny_backbone(encoder)
    x = spectrograms()
    eager = numpy_outputs(backbone(x))
    assert_output_spec(backbone, x, eager)
    assert_output_spec(backbone, keras.KerasTensor(x.shape), eager)
    symbolic = backbone(keras.Input((None, 128)))
    assert {k: len(v.shape) for k, v in symbolic.items()} == {k: v.ndim for k, v in eager.items()}
    clone = type(backbone).from_config(backbone.get_config())
    clone.set_weights(backbone.get_weights())
    assert_close(clone(x), eager, 1e-6)


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_a_mixed_policy_survives_configs_files_and_presets(encoder, tmp_path):
    backbone = tiny_backbone(encoder, dtype="mixed_bfloat16")
    x = spectrograms()
    expected = numpy_outputs(backbone(x))
    assert backbone.get_config()["dtype"]["config"]["name"] == "mixed_bfloat16"
    assert type(backbone).from_config(backbone.get_config()).dtype_policy.name == "mixed_bfloat16"
    backbone.save(tmp_path / "model.keras")
    backbone.save_to_preset(tmp_path / "preset")
    model = AudioClassifier(backbone, CGP(2, 8))
    model.save_to_preset(tmp_path / "task")
    restored = {"keras": keras.saving.load_model(tmp_path / "model.keras"),
                "preset": type(backbone).from_preset(tmp_path / "preset"),
                "task preset": AudioClassifier.from_preset(tmp_path / "task").backbone}
    for where, loaded in restored.items():
        assert loaded.dtype_policy.name == "mixed_bfloat16", where
        dense = next(layer for layer in loaded._flatten_layers() if isinstance(layer, keras.layers.Dense))
        assert dense.compute_dtype == "bfloat16", where
        # A few bfloat16 steps: torch picks other kernels for the frozen backbone of a task model.
        assert_close(loaded(x), expected, 2**-6)


@pytest.mark.parametrize("mode", sorted(QUANTIZATION))
@pytest.mark.parametrize("encoder", sorted(ENCODERS))
@pytest.mark.long
def test_quantize_straight_from_presets_and_through_keras_files(encoder, mode, tmp_path):
    x = spectrograms()
    tiny_backbone(encoder).save_to_preset(tmp_path / "preset")
    float_backbone = ENCODERS[encoder].backbone_class.from_preset(tmp_path / "preset")
    expected = numpy_outputs(float_backbone(x))
    backbone = ENCODERS[encoder].backbone_class.from_preset(tmp_path / "preset")
    backbone.quantize(mode)  # before any call: every layer is built by from_preset
    quantized = numpy_outputs(backbone(x))
    assert_close(quantized, expected, QUANTIZATION[mode])
    dense = [layer for layer in backbone._flatten_layers() if isinstance(layer, keras.layers.Dense)]
    assert dense and all(layer.quantization_mode == mode for layer in dense)  # every projection
    backbone.save(tmp_path / "quantized.keras")
    loaded = keras.saving.load_model(tmp_path / "quantized.keras")
    revived = type(backbone).from_config(backbone.get_config())
    assert len(loaded.weights) == len(revived.weights) == len(backbone.weights)
    assert_close(loaded(x), quantized, 1e-6)

    # A task model from its preset: the backbone quantized, the head float.
    frontend = LogMelSpectrogram(time_frames=32)
    AudioClassifier(float_backbone, CGP(2, 8), frontend=frontend).save_to_preset(tmp_path / "task")
    waveforms = np.random.default_rng(1).uniform(-1, 1, size=(2, 5200)).astype("float32")
    model = AudioClassifier.from_preset(tmp_path / "task")
    logits = to_numpy(model(waveforms))
    model.quantize(mode)
    assert all(layer.quantization_mode is None for layer in model.head._flatten_layers())
    quantized_logits = to_numpy(model(waveforms))
    np.testing.assert_allclose(quantized_logits, logits, atol=QUANTIZATION[mode] * np.abs(logits).max())
    model.save(tmp_path / "task.keras")
    np.testing.assert_allclose(to_numpy(keras.saving.load_model(tmp_path / "task.keras")(waveforms)),
                               quantized_logits, atol=1e-6)
    model.save_to_preset(tmp_path / "quantized_task")
    np.testing.assert_allclose(to_numpy(AudioClassifier.from_preset(tmp_path / "quantized_task")(waveforms)),
                               quantized_logits, atol=1e-6)
    # A preset keeps the quantized weights as they are (the official code reads float ones). Built
    # last: the models it builds would change the random draws of the task model's head above.
    backbone.save_to_preset(tmp_path / "quantized_preset")
    assert_close(type(backbone).from_preset(tmp_path / "quantized_preset")(x), quantized, 1e-6)
    with pytest.raises(ValueError, match="quantized"):
        backbone.export_official(tmp_path / "refused.safetensors")


@pytest.mark.parametrize("head_name", sorted(TINY_HEADS))
@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_task_model_contract(encoder, head_name, tmp_path):
    make_head, task, query_tokens = TINY_HEADS[head_name]
    model = AudioClassifier(tiny_backbone(encoder, num_query_tokens=query_tokens), make_head(), task=task)
    x = spectrograms(frames=64)
    expected = to_numpy(model(x))
    assert_output_spec(model, x, expected)
    model.save(tmp_path / "model.keras")
    np.testing.assert_allclose(to_numpy(keras.saving.load_model(tmp_path / "model.keras")(x)), expected, atol=1e-5)


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_lora_trains_its_factors_alone_and_saves_merged(encoder, tmp_path):
    backbone = tiny_backbone(encoder)
    x = spectrograms(batch=4)
    before = {v.path: to_numpy(v) for v in backbone.weights}
    expected = numpy_outputs(backbone(x))
    backbone.enable_lora(2)
    factors = [v for layer in backbone.lora_layers() for v in (layer.lora_kernel_a, layer.lora_kernel_b)]
    assert len(backbone.lora_layers()) >= 2 * backbone.depth
    assert_close(backbone(x), expected, 1e-6)  # B starts at zero
    model = AudioClassifier(backbone, LinearHead(2, "mean"), freeze_backbone=False)  # sets it trainable
    assert {v.path for v in backbone.trainable_weights} == {v.path for v in factors}
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.fit(x, np.array([0, 1, 0, 1]), epochs=2, verbose=0)
    assert all(np.array_equal(to_numpy(v), before[v.path]) for v in backbone.weights if v.path in before)
    assert min(np.abs(to_numpy(v)).max() for v in factors) > 0
    adapted = numpy_outputs(backbone(x))
    backbone.save_to_preset(tmp_path / "preset")
    backbone.save(tmp_path / "model.keras")
    for loaded in (type(backbone).from_preset(tmp_path / "preset"), keras.saving.load_model(tmp_path / "model.keras")):
        assert loaded.lora_rank is None and len(loaded.weights) == len(before)
        assert_close(loaded(x), adapted, 1e-5)
    with pytest.raises(ValueError, match="already enabled"):
        backbone.enable_lora(2)


@pytest.mark.parametrize("name", sorted(FRONTENDS))
def test_frontend_streamed_windows_equal_the_whole_clip(name):
    frontend = build_frontend(name)
    clip = np.random.default_rng(2).uniform(-0.5, 0.5, size=frontend.sample_rate * 3 + 123).astype("float32")
    whole = to_numpy(frontend(clip[None]))[0]
    assert_output_spec(frontend, clip[None], whole[None])
    read = functools.partial(waveform_window, clip)
    streamed = np.concatenate([to_numpy(chunk) for chunk in frontend.stream_frames(read, len(clip), 64)])
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-4 * max(1.0, np.abs(whole).max()))
