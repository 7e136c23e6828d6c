import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from gradients import value_and_gradients
from helpers import in_one_backend_pass, to_numpy

from keras_bat.heads import CGP, ASRHead, Head2Toe, LayerMixedLinear, LinearHead, ProtoBin, VQTHead
from keras_bat.layers import LogMelSpectrogram
from keras_bat.models import AudioClassifier, BATBackbone, BEATsBackbone

SMALL = {"dim": 32, "depth": 2, "num_heads": 4}
BEATS_SMALL = {**SMALL, "ffn_dim": 64, "embed_dim": 16, "conv_pos": 8, "conv_pos_groups": 2}


def small_backbone(encoder, **kwargs):
    """A tiny encoder: BAT, EAT / SSLAM (BAT without the gate) or BEATs."""
    if encoder == "beats":
        return BEATsBackbone(**BEATS_SMALL, **kwargs)
    return BATBackbone(**SMALL, use_gate=encoder == "bat", **kwargs)


def learnable_problem(frame_wise=False):
    """Class 1 is loud in the upper half of the mel bins; 64 frames = 4 time patches."""
    rng = np.random.default_rng(0)
    labels = np.arange(8) % 2
    x = 0.2 * rng.uniform(size=(8, 64, 128)).astype("float32")
    x[labels == 1, :, 64:] += 0.8
    return x, labels


HEADS = {
    "cgp": (lambda: CGP(2, 16), "multiclass"),
    "linear": (lambda: LinearHead(2, "mean"), "multiclass"),
    "layer_mixed": (lambda: LayerMixedLinear(2), "multiclass"),
    "head2toe": (lambda: Head2Toe(2, "cls", lasso_weight=1e-4), "multilabel"),
    "protobin": (lambda: ProtoBin(2, 16), "multiclass"),
    "cgp_frame": (lambda: CGP(2, 16, "frame"), "frame"),
    "vqt": (lambda: VQTHead(2, depth=2, dim=32, num_query_tokens=3), "multiclass"),
}


def targets(labels, task):
    if task == "multilabel":
        return np.eye(2, dtype="float32")[labels]
    if task == "frame":
        return np.repeat(np.eye(2, dtype="float32")[labels][:, None], 4, axis=1)  # B, T, C
    return labels


@pytest.mark.parametrize("encoder", ["bat", "eat", "beats"])
@pytest.mark.parametrize("name", sorted(HEADS))
def test_probe_learns_and_keeps_backbone_frozen(name, encoder):
    make_head, task = HEADS[name]
    head = make_head()
    backbone = small_backbone(encoder, num_query_tokens=3 if name == "vqt" else 0)
    model = AudioClassifier(backbone, head, task=task)
    model.compile(learning_rate=1e-2)
    x, labels = learnable_problem()
    y = targets(labels, task)
    frozen = [to_numpy(w) for w in backbone.weights]
    before = model.evaluate(x, y, verbose=0, return_dict=True)
    # Tiny random BEATs features separate the classes less well: more epochs, a looser bound.
    model.fit(x, y, batch_size=4, epochs=60 if encoder == "beats" else 20, verbose=0)
    after = model.evaluate(x, y, verbose=0, return_dict=True)
    if encoder == "beats":  # measured: the loss falls to 34-88 % of the untrained head's, backend by backend
        assert after["loss"] < 0.8 * before["loss"], (before["loss"], after["loss"])
    else:  # measured (torch, JAX): to 2-55 %, and all 8 clips (every time patch for frame heads) right
        assert after["loss"] < 0.65 * before["loss"], (before["loss"], after["loss"])
        predicted = to_numpy(model.predict(x, verbose=0)).argmax(axis=-1)
        correct = predicted == (labels[:, None] if task == "frame" else labels)
        assert correct.mean() >= 7 / 8, predicted  # chance: 4 of 8
    assert not backbone.trainable_weights and all(
        np.array_equal(a, to_numpy(w)) for a, w in zip(frozen, backbone.weights))
    head_ids = {id(w) for w in head.trainable_weights}
    assert {id(w) for w in model.trainable_weights} == head_ids


def test_finetuning_updates_the_backbone():
    x, labels = learnable_problem()
    backbone = BATBackbone(**SMALL, drop_path_rate=0.1)
    model = AudioClassifier(backbone, LinearHead(2), freeze_backbone=False)
    model.compile(learning_rate=1e-3)
    assert model.optimizer.beta_2 == 0.95 and model.optimizer.layer_decay == 0.75
    before = [to_numpy(w) for w in backbone.trainable_weights]
    model.fit(x, labels, batch_size=4, epochs=1, verbose=0)
    assert all(not np.array_equal(a, to_numpy(w)) for a, w in zip(before, backbone.trainable_weights))


@pytest.mark.parametrize("encoder", ["eat", "beats"])
def test_float16_finetuning_scales_the_loss(encoder):
    if keras.backend.backend() == "jax":
        import jax

        if jax.default_backend() == "cpu":
            pytest.skip("XLA on CPU compiles no float16 dot products with float32 accumulation (attention): "
                        "the TensorFlow and torch passes run it")
    x, labels = learnable_problem()
    model = AudioClassifier(small_backbone(encoder, dtype="mixed_float16"), LinearHead(2), freeze_backbone=False)
    model.compile(learning_rate=1e-3)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    history = model.fit(x, labels, batch_size=4, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    assert to_numpy(model(x[:2])).dtype == np.float32  # the head and its logits stay float32


@pytest.mark.parametrize("encoder", ["bat", "beats"])
def test_ctc_probe_learns_and_needs_lengths(encoder):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4, 64, 128)).astype("float32")
    y = {"labels": np.array([[1, 2, 3, 0], [4, 5, 0, 0], [6, 0, 0, 0], [7, 8, 9, 10]], "int32"),
         "label_lengths": np.array([3, 2, 1, 4], "int32")}
    model = AudioClassifier(small_backbone(encoder), ASRHead(12, lstm_units=16), task="ctc")
    model.compile(learning_rate=3e-3)
    history = model.fit(x, y, batch_size=4, epochs=12, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert model.predict(x, verbose=0).shape == (4, 32, 12)  # 4 patches x 8 upsampling
    with pytest.raises(ValueError, match="label_lengths"):
        model.fit(x, y["labels"], epochs=1, verbose=0)


def test_waveform_classifier_saves_and_loads(tmp_path):
    frontend = LogMelSpectrogram(time_frames=64)
    model = AudioClassifier(BATBackbone(**SMALL), CGP(3, 8), frontend=frontend)
    waveforms = np.random.default_rng(1).normal(size=(2, 10080)).astype("float32") * 0.1
    expected = to_numpy(model(waveforms))
    model.save(tmp_path / "probe.keras")
    restored = keras.saving.load_model(tmp_path / "probe.keras")
    assert isinstance(restored, AudioClassifier) and restored.freeze_backbone
    np.testing.assert_allclose(to_numpy(restored(waveforms)), expected, atol=1e-6)


@pytest.mark.parametrize("head, task, message", [
    (lambda: LinearHead(2, "cls"), "frame", "pooling='frame'"),
    (lambda: CGP(2, 4, "frame"), "multiclass", "use task='frame'"),
    (lambda: LinearHead(2), "ctc", "ASRHead"),
    (lambda: ASRHead(5), "multiclass", "ASRHead"),
    (lambda: LinearHead(2), "regression", "`task` must be one of"),
    (lambda: VQTHead(2, depth=2, dim=32, num_query_tokens=3), "multiclass", "num_query_tokens=3"),
])
def test_bad_task_configurations(head, task, message):
    with pytest.raises(ValueError, match=message):
        AudioClassifier(BATBackbone(**SMALL), head(), task=task)


def test_classifier_preset_restores_frontend_backbone_and_head(tmp_path):
    model = AudioClassifier(BATBackbone(**SMALL), CGP(3, 8), frontend=LogMelSpectrogram(time_frames=64),
                            task="multiclass", label_smoothing=0.1)
    waveforms = np.random.default_rng(2).normal(size=(2, 10080)).astype("float32") * 0.1
    expected = to_numpy(model(waveforms))
    model.save_to_preset(tmp_path / "probe")
    restored = AudioClassifier.from_preset(tmp_path / "probe")
    assert isinstance(restored.frontend, LogMelSpectrogram) and restored.frontend.time_frames == 64
    assert isinstance(restored.head, CGP) and restored.head.num_prototypes == 8 and restored.label_smoothing == 0.1
    np.testing.assert_allclose(to_numpy(restored(waveforms)), expected, atol=1e-6)
    # The folder is a backbone preset too: the encoder alone, with its weights.
    encoder = BATBackbone.from_preset(str(tmp_path / "probe"))
    spectrogram = to_numpy(model.frontend(waveforms))
    np.testing.assert_allclose(to_numpy(encoder(spectrogram)["cls_tokens"]),
                               to_numpy(model.backbone(spectrogram)["cls_tokens"]), atol=1e-6)
    with pytest.raises(ValueError, match="holds no task.json"):
        AudioClassifier.from_preset(tmp_path)


SAVE_UNDER_ANOTHER_BACKEND = """
import sys
import numpy as np
import keras
from keras_bat import AudioClassifier, BATBackbone, LogMelSpectrogram
from keras_bat.heads import CGP
keras.utils.set_random_seed(0)
model = AudioClassifier(BATBackbone(dim=32, depth=2, num_heads=4), CGP(3, 8),
                        frontend=LogMelSpectrogram(time_frames=64), label_names=["dog", "rain", "siren"])
waveforms = np.random.default_rng(3).normal(size=(2, 10080)).astype("float32") * 0.1
np.savez(sys.argv[1] + ".npz", waveforms=waveforms, logits=keras.ops.convert_to_numpy(model(waveforms)))
model.save(sys.argv[1] + ".keras")
model.save_to_preset(sys.argv[1] + "_preset")
"""


def test_keras_file_saved_under_another_backend_loads_with_equal_outputs(tmp_path):
    # TensorFlow's files load under JAX and torch; under TensorFlow, torch's file.
    source = "torch" if keras.backend.backend() == "tensorflow" else "tensorflow"
    environment = {**os.environ, "KERAS_BACKEND": source}
    subprocess.run([sys.executable, "-c", SAVE_UNDER_ANOTHER_BACKEND, str(tmp_path / "model")], env=environment,
                   check=True, capture_output=True)
    saved = np.load(tmp_path / "model.npz")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(to_numpy(restored(saved["waveforms"])), saved["logits"], atol=1e-5)
    # The task preset too, in keras-hub's layout, with what wrote it.
    preset = tmp_path / "model_preset"
    assert sorted(os.listdir(preset)) == ["config.json", "frontend.json", "metadata.json", "model.weights.h5",
                                          "task.json", "task.weights.h5"]
    metadata = json.loads((preset / "metadata.json").read_text())
    assert metadata["backend"] == source and metadata["keras_version"] == keras.__version__
    assert metadata["keras_bat_version"] and metadata["class_name"] == "AudioClassifier"
    assert metadata["task"] == "multiclass" and metadata["num_classes"] == 3 and metadata["parameter_count"] > 0
    restored = AudioClassifier.from_preset(preset)
    assert restored.label_names == ["dog", "rain", "siren"]
    np.testing.assert_allclose(to_numpy(restored(saved["waveforms"])), saved["logits"], atol=1e-5)
    frontend = keras.saving.deserialize_keras_object(json.loads((preset / "frontend.json").read_text()))
    assert isinstance(frontend, LogMelSpectrogram) and frontend.time_frames == 64


LOAD_IN_A_NEW_PROCESS = """
import sys
import keras
import numpy as np
from keras_bat.models import AudioClassifier

model = AudioClassifier.from_preset(sys.argv[1])
np.save(sys.argv[2], keras.ops.convert_to_numpy(model(np.load(sys.argv[3]))))
"""


@in_one_backend_pass("torch", "what loading a preset imports")  # outputs: the tests above
def test_a_finetuned_preset_loads_in_a_process_that_imported_only_the_models(tmp_path):
    # A finetuned model carries its augmentation, a class of keras_bat.data: the preset must load
    # where nothing imported that module yet.
    from keras_bat.data import AudioAugmentation

    model = AudioClassifier(small_backbone("bat"), LinearHead(2), frontend=LogMelSpectrogram(time_frames=32),
                            augmentation=AudioAugmentation(gain=True, time_roll=True))
    waveforms = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 5200)).astype("float32")
    model.save_to_preset(tmp_path / "finetuned")
    np.save(tmp_path / "waveforms.npy", waveforms)
    done = subprocess.run([sys.executable, "-c", LOAD_IN_A_NEW_PROCESS, str(tmp_path / "finetuned"),
                           str(tmp_path / "logits.npy"), str(tmp_path / "waveforms.npy")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), to_numpy(model(waveforms)), atol=1e-5)


# Every head and pooling; 11 time patches in chunks of 2 make 6 chunks, the last one patch long.
STREAMED_HEADS = {
    "cgp_cls": (lambda: CGP(2, 16), "multiclass"),
    "cgp_mean": (lambda: CGP(2, 16, "mean"), "multiclass"),
    "cgp_frame": (lambda: CGP(2, 16, "frame"), "frame"),
    "linear_cls": (lambda: LinearHead(2, use_norm=True), "multiclass"),
    "linear_mean": (lambda: LinearHead(2, "mean"), "multiclass"),
    "linear_frame": (lambda: LinearHead(2, "frame", use_norm=True), "frame"),
    "layer_mixed_mean": (lambda: LayerMixedLinear(2, "mean"), "multilabel"),
    "head2toe_frame": (lambda: Head2Toe(2, "frame"), "frame"),
    "protobin": (lambda: ProtoBin(2, 16), "multiclass"),
    "protobin_frame": (lambda: ProtoBin(2, 16, "frame"), "frame"),
    "vqt": (lambda: VQTHead(2, depth=2, dim=32, num_query_tokens=3), "multiclass"),
    "asr": (lambda: ASRHead(num_classes=5, upsample_factor=2, lstm_units=8), "ctc"),
}


@pytest.mark.parametrize("name, encoder", [(name, "bat") for name in sorted(STREAMED_HEADS)]
                         + [(name, "beats") for name in ("cgp_cls", "linear_frame", "vqt", "asr")])
def test_predict_long_equals_the_whole_clip(name, encoder):
    make_head, task = STREAMED_HEADS[name]
    backbone = small_backbone(encoder, chunk_time_patches=2, num_query_tokens=3 if name == "vqt" else 0)
    model = AudioClassifier(backbone, make_head(), task=task)
    spectrograms = np.random.default_rng(1).uniform(size=(3, 11 * 16, 128)).astype("float32")
    streamed = model.predict_long(spectrograms)  # builds the head
    expected = to_numpy(model(spectrograms, training=False))
    assert streamed.shape == expected.shape
    np.testing.assert_allclose(streamed, expected, atol=2e-5, rtol=0)


@pytest.mark.parametrize("name", [n for n in sorted(STREAMED_HEADS) if STREAMED_HEADS[n][1] != "frame"
                                  and n != "asr"])
def test_clip_heads_keep_summaries_of_constant_size(name):
    """What a clip-level head keeps of a chunk does not depend on the chunk's length."""
    make_head, task = STREAMED_HEADS[name]
    backbone = small_backbone("bat", num_query_tokens=3 if name == "vqt" else 0)
    model = AudioClassifier(backbone, make_head(), task=task)
    model(np.zeros((1, 32, 128), "float32"))
    sizes = []
    for frames in (32, 64):
        inputs = np.zeros((1, frames, 128), "float32")
        if name == "vqt":
            inputs = {"spectrogram": inputs, "query_tokens": to_numpy(model.head.batch_query_tokens(1))}
        summary = model.head.chunk_summary(backbone(inputs))
        sizes.append(sum(int(np.prod(value.shape)) for value, _ in summary.values()))
    assert sizes[0] == sizes[1]


@pytest.mark.parametrize("freeze", [True, False])
def test_no_gradient_flows_through_a_frozen_backbone(freeze):
    """A probe stops gradients at the backbone's outputs: nothing before it (here a scale on the
    input spectrogram) gets a gradient. A finetuned backbone passes them."""
    backbone = small_backbone("bat")
    model = AudioClassifier(backbone, LinearHead(2, "mean"), freeze_backbone=freeze)
    x, labels = learnable_problem()
    model(x)
    scale = keras.Variable(1.0, name="input_scale")

    def loss():
        logits = model(keras.ops.convert_to_tensor(x) * scale, training=True)
        return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))

    _, (gradient,) = value_and_gradients(loss, [scale])
    magnitude = 0.0 if gradient is None else abs(float(to_numpy(gradient)))
    assert (magnitude == 0.0) == freeze, magnitude


def test_mixed_bfloat16_runs_the_encoder_in_bfloat16_and_the_rest_in_float32():
    backbone = BATBackbone(**SMALL, dtype="mixed_bfloat16")
    model = AudioClassifier(backbone, CGP(2, 16), frontend=backbone.make_frontend(time_frames=64))
    logits = model(np.random.default_rng(0).normal(size=(2, 10240)).astype("float32"))
    features = backbone(np.zeros((1, 64, 128), "float32"))
    assert {keras.backend.standardize_dtype(v.dtype) for v in features.values()} == {"bfloat16"}
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert model.frontend.compute_dtype == "float32"
    assert {layer.compute_dtype for layer in model.head._flatten_layers()} == {"float32"}
    assert {keras.backend.standardize_dtype(v.dtype) for v in model.weights} == {"float32"}
