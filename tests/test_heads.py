import keras
import numpy as np
import pytest
from helpers import load_parity, max_abs_error, parity_path, to_numpy

from keras_bat.convert import load_official_head_weights
from keras_bat.models.bat import load_official_weights
from keras_bat.heads import CGP, ASRHead, Head2Toe, LayerMixedLinear, LinearHead, ProtoBin, VQTHead, plot_layer_weights
from keras_bat.models import BATBackbone

# Fixture name -> head as the official configuration builds it (5 classes, 32 prototypes).
OFFICIAL_HEADS = {
    "linear_cls": lambda: LinearHead(5, "cls"),
    "linear_patch_avg": lambda: LinearHead(5, "mean"),
    "linear_frame": lambda: LinearHead(5, "frame"),
    "linear_cls_norm": lambda: LinearHead(5, "cls", use_norm=True),
    "linear_cgp_cls": lambda: LayerMixedLinear(5, "cls"),
    "linear_cgp_patch_avg": lambda: LayerMixedLinear(5, "mean"),
    "linear_cgp_frame": lambda: LayerMixedLinear(5, "frame"),
    "cgp_cls": lambda: CGP(5, 32, "cls"),
    "cgp_patch_avg": lambda: CGP(5, 32, "mean"),
    "cgp_frame": lambda: CGP(5, 32, "frame"),
    "protobin": lambda: ProtoBin(5, 32, "max"),
    "protobin_frame": lambda: ProtoBin(5, 32, "frame"),
    "h2t_cls": lambda: Head2Toe(5, "cls"),
    "h2t_patch_avg": lambda: Head2Toe(5, "mean"),
    "h2t_frame": lambda: Head2Toe(5, "frame"),
    "h2t_cls_layerwise": lambda: Head2Toe(5, "cls", layer_wise_lasso=True, dim=64),
}


@pytest.fixture(scope="module")
def features():
    encoder = load_parity("encoder_outputs.safetensors")
    return {"cls_tokens": encoder["cls_tokens"].transpose(1, 0, 2),  # B, L, D
            "patch_tokens": encoder["patch_tokens"].transpose(1, 0, 3, 4, 2)}  # B, L, T, F, D


@pytest.fixture(scope="module")
def head_outputs():
    return load_parity("heads_outputs.safetensors")


def official_head(name, features):
    head = OFFICIAL_HEADS[name]()
    if isinstance(head, Head2Toe) and not head.layer_wise_lasso:
        head.build({k: v.shape for k, v in features.items()})  # Head2Toe's width does not tell dim
    return load_official_head_weights(head, parity_path("heads_weights.safetensors"), prefix=f"{name}/")


@pytest.mark.parametrize("name", sorted(OFFICIAL_HEADS))
def test_head_matches_official(name, features, head_outputs):
    head = official_head(name, features)
    assert max_abs_error(head(features), head_outputs[name]) <= 1e-4
    if f"{name}/lasso_penalty" in head_outputs:
        expected = float(head_outputs[f"{name}/lasso_penalty"])
        assert abs(float(to_numpy(head.lasso_penalty())) - expected) <= 1e-4 * expected


def test_asr_head_matches_official(features, head_outputs):
    head = load_official_head_weights(ASRHead(29), parity_path("asr_head_weights.safetensors"), prefix="asr/")
    log_probs = head(features)  # B, 8 T, C
    assert log_probs.shape == (3, 128, 29)
    assert max_abs_error(log_probs, head_outputs["asr"].transpose(1, 0, 2)) <= 1e-4


def test_vqt_matches_official(head_outputs, tiny_config):
    encoder = load_parity("encoder_outputs.safetensors")
    backbone = BATBackbone(**tiny_config, num_query_tokens=2)
    load_official_weights(backbone, parity_path("encoder_weights.safetensors"))
    head = load_official_head_weights(VQTHead(5, depth=3, dim=64, num_query_tokens=2),
                                      parity_path("heads_weights.safetensors"), prefix="vqt/")
    spectrogram = keras.ops.convert_to_tensor(encoder["input"][:, 0])
    outputs = backbone({"spectrogram": spectrogram, "query_tokens": head.batch_query_tokens(3)})
    assert max_abs_error(head.features(outputs), head_outputs["vqt/features"]) <= 1e-4
    assert max_abs_error(head(outputs), head_outputs["vqt"]) <= 1e-4
    # Query tokens read every block but are no keys: class and patch tokens stay as without them.
    plain = load_official_weights(BATBackbone(**tiny_config), parity_path("encoder_weights.safetensors"))(spectrogram)
    for key in ("cls_tokens", "patch_tokens"):
        assert max_abs_error(outputs[key], plain[key]) <= 1e-5


@pytest.fixture(scope="module")
def random_features():
    """Features of the fixtures' shapes (batch 2, 3 layers, 4 x 8 patches, dim 64), random."""
    rng = np.random.default_rng(0)
    return {"cls_tokens": rng.normal(size=(2, 3, 64)).astype("float32"),
            "patch_tokens": rng.normal(size=(2, 3, 4, 8, 64)).astype("float32")}


def test_layer_gate_is_readable_and_plottable(random_features):
    head = CGP(5, 32)
    head(random_features)
    logits = np.array([0.5, -1.0, 2.0], "float32")
    head.layer_logits.assign(logits)
    np.testing.assert_allclose(head.layer_weights, np.exp(logits) / np.exp(logits).sum(), rtol=1e-6)  # softmax
    fresh = LayerMixedLinear(5)
    fresh.build({k: v.shape for k, v in random_features.items()})
    np.testing.assert_allclose(fresh.layer_weights, np.full(3, 1 / 3), rtol=1e-6)  # starts uniform
    figure = plot_layer_weights([head, fresh], labels=["cgp", "linear mix"])
    bars = figure.axes[0].patches
    assert len(bars) == 6
    np.testing.assert_allclose([bar.get_height() for bar in bars[:3]], head.layer_weights, rtol=1e-6)


@pytest.mark.parametrize("name", ["cgp_frame", "h2t_cls_layerwise", "protobin", "linear_cls_norm"])
def test_head_config_round_trip(name, random_features):
    head = OFFICIAL_HEADS[name]()
    expected = to_numpy(head(random_features))
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    if not clone.built:
        clone.build({k: v.shape for k, v in random_features.items()})
    clone.set_weights(head.get_weights())
    np.testing.assert_allclose(to_numpy(clone(random_features)), expected, atol=1e-6)


def test_bad_head_configurations():
    with pytest.raises(ValueError, match=r"pooling in \('cls', 'mean', 'frame'\)"):
        CGP(5, pooling="max")
    with pytest.raises(ValueError, match=r"pooling in \('max', 'frame'\)"):
        ProtoBin(5, pooling="cls")
    with pytest.raises(ValueError, match="needs `dim`"):
        Head2Toe(5, layer_wise_lasso=True)
    with pytest.raises(ValueError, match="num_prototypes"):
        CGP(5, num_prototypes=0)
    with pytest.raises(ValueError, match="output dict"):
        LinearHead(5)(np.zeros((2, 64), "float32"))


def test_head_checkpoint_mismatches_are_listed(features):
    expected = r"'cgp_cls/prototype_vectors': checkpoint \(32, 64, 1, 1\) vs model \(16, 64, 1, 1\)"
    with pytest.raises(ValueError, match=expected):
        load_official_head_weights(CGP(5, 16), parity_path("heads_weights.safetensors"), prefix="cgp_cls/")
    weights = {k: v for k, v in load_parity("heads_weights.safetensors").items() if k.startswith("linear_cls/")}
    with pytest.raises(ValueError, match=r"missing keys.*'ln\.weight'"):
        load_official_head_weights(LinearHead(5, use_norm=True), weights, prefix="linear_cls/")
    weights["linear_cls/extra.weight"] = np.zeros(3, "float32")
    with pytest.raises(ValueError, match=r"unexpected keys.*'linear_cls/extra\.weight'"):
        load_official_head_weights(LinearHead(5), weights, prefix="linear_cls/")
    scale = {k: v for k, v in load_parity("heads_weights.safetensors").items() if k.startswith("h2t_cls/")}
    with pytest.raises(ValueError, match="group_scale"):  # element-wise scale in a layer-wise head
        load_official_head_weights(Head2Toe(5, layer_wise_lasso=True, dim=64), scale, prefix="h2t_cls/")


class RecordingDropout:
    """Stands in for a head's dropout: a known mask (drawn from `seed`), and a record of what it
    was given. Set with `replace_dropout`."""

    def __init__(self, rate, seed):
        self.rate, self.rng = rate, np.random.default_rng(seed)
        self.calls = []

    def __call__(self, x, training=None):
        mask = (self.rng.uniform(size=x.shape) >= self.rate).astype("float32")
        try:
            seen = to_numpy(x)
        except Exception:  # traced (JAX differentiates even an eager step): no values to record
            seen = None
        self.calls.append({"input": seen, "training": training, "mask": mask})
        return x * keras.ops.convert_to_tensor(mask / (1.0 - self.rate), x.dtype) if training else x


def replace_dropout(head, rate=0.5, seed=12):
    recorder = RecordingDropout(rate, seed)
    object.__setattr__(head, "head_dropout", recorder)  # not a tracked layer: the head is built
    return recorder


# Heads with their feature width options: norm and dropout where the head has them.
TRAINING_HEADS = {
    "linear_cls_norm": lambda: LinearHead(3, "cls", use_norm=True, dropout=0.5),
    "linear_frame_norm": lambda: LinearHead(3, "frame", use_norm=True, dropout=0.5),
    "layer_mixed_norm": lambda: LayerMixedLinear(3, "mean", use_norm=True, dropout=0.5),
    "head2toe_norm": lambda: Head2Toe(3, "cls", use_norm=True, dropout=0.5),
    "cgp_cls": lambda: CGP(3, 8, "cls", dropout=0.5),
    "cgp_frame": lambda: CGP(3, 8, "frame", dropout=0.5),
    "protobin": lambda: ProtoBin(3, 8, dropout=0.5),
    "vqt_norm": lambda: VQTHead(3, depth=2, dim=8, num_query_tokens=2, use_norm=True, dropout=0.5),
    "asr_norm": lambda: ASRHead(5, upsample_factor=2, lstm_units=4, use_norm=True, dropout=0.5),
}


def small_features(rng, batch=4, layers=2, dim=8):
    return {"cls_tokens": rng.normal(size=(batch, layers, dim)).astype("float32"),
            "patch_tokens": rng.normal(size=(batch, layers, 3, 2, dim)).astype("float32"),
            "query_tokens": rng.normal(size=(batch, layers, 2, dim)).astype("float32")}


@pytest.mark.parametrize("name", sorted(TRAINING_HEADS))
def test_heads_in_training_normalise_then_drop_out_then_project(name):
    """Under `training=True` a head's output is `fc(dropout(norm(features)))`: the dropout sees
    normalised features (zero mean, unit variance per feature vector before the norm's scale and
    offset), its mask reaches the linear layer unchanged, and inference uses no mask."""
    rng = np.random.default_rng(11)
    head = TRAINING_HEADS[name]()
    features = small_features(rng)
    head(features)  # builds
    norm = getattr(head, "norm", None)
    if norm is not None:  # a scale and offset that a missing or misplaced norm cannot fake
        width = norm.gamma.shape[0]
        norm.gamma.assign(rng.uniform(0.5, 2.0, size=width).astype("float32"))
        norm.beta.assign(rng.normal(size=width).astype("float32"))
    dropout = replace_dropout(head)
    fc_kernel, fc_bias = to_numpy(head.fc.kernel), to_numpy(head.fc.bias)

    def projected(x):
        logits = x @ fc_kernel + fc_bias
        if name.startswith("asr"):  # the ASR head returns log-probabilities
            logits = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        return logits

    for training in (True, False):
        out = to_numpy(head(features, training=training))
        call = dropout.calls[-1]
        assert call["training"] is training
        dropped = call["input"] * call["mask"] / 0.5 if training else call["input"]
        np.testing.assert_allclose(out, projected(dropped), atol=1e-4, err_msg=f"training={training}")
        if norm is not None:  # (the LSTM's small outputs make the norm's epsilon count)
            unscaled = (call["input"] - to_numpy(norm.beta)) / to_numpy(norm.gamma)
            np.testing.assert_allclose(unscaled.mean(-1), 0.0, atol=1e-4)
            np.testing.assert_allclose(unscaled.var(-1), 1.0, atol=2e-2)
    assert dropout.calls[0]["mask"].mean() < 0.8  # the mask dropped some features


# Heads for a 32-wide, 2-block encoder: the task model's two call paths (features; query tokens).
FIT_HEADS = {
    "cgp": lambda: CGP(3, 8, dropout=0.5),
    "linear_norm": lambda: LinearHead(3, use_norm=True, dropout=0.5),
    "vqt": lambda: VQTHead(3, depth=2, dim=32, num_query_tokens=2, dropout=0.5),
}


@pytest.mark.parametrize("name", sorted(FIT_HEADS))
def test_task_model_runs_the_head_in_training_mode_in_fit(name):
    from keras_bat.models import AudioClassifier

    from test_models_audio_classifier import small_backbone

    head = FIT_HEADS[name]()
    model = AudioClassifier(small_backbone("bat", num_query_tokens=2 if name == "vqt" else 0), head)
    x = np.random.default_rng(13).uniform(size=(2, 64, 128)).astype("float32")
    y = np.array([0, 2])
    model(x)
    dropout = replace_dropout(head, seed=14)
    model.compile(run_eagerly=True)
    model.train_on_batch(x, y)  # (the first step may also build the model, in inference mode)
    assert dropout.calls[-1]["training"] is True
    calls = len(dropout.calls)
    model.train_on_batch(x, y)
    assert [call["training"] for call in dropout.calls[calls:]] == [True]
    model.predict_on_batch(x)
    assert dropout.calls[-1]["training"] in (False, None)
