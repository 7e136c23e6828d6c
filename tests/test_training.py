import json

import keras
import numpy as np
import pytest
from helpers import parity_path, require_module, to_numpy

from scipy.stats import norm

from keras_bat.models import BATBackbone
from keras_bat.ops.keras_internals import uses_weight_decay
from keras_bat.training import (
    AsymmetricLoss,
    LogitF1Score,
    MeanAveragePrecision,
    SoftmaxCrossEntropy,
    WarmupCosineDecay,
    average_precision,
    ctc_greedy_decode,
    d_prime,
    layer_scale,
    mean_average_precision,
    multilabel_scores,
    paper_adamw,
    roc_auc,
)


@pytest.fixture(scope="module")
def schedules():
    return json.loads(parity_path("schedules.json").read_text())


def test_lr_schedule_matches_official(schedules):
    lr = schedules["lr"]
    schedule = WarmupCosineDecay(lr["base_lr"], lr["warmup_steps"], lr["total_steps"], lr["min_lr"])
    values = [float(to_numpy(schedule(step))) for step in range(len(lr["values_per_step"]))]
    np.testing.assert_allclose(values, lr["values_per_step"], rtol=0, atol=1e-9)
    assert values[0] == pytest.approx(lr["min_lr"]) and max(values) == pytest.approx(lr["base_lr"])
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert clone.get_config() == schedule.get_config()


def test_pretrainer_ema_decay_matches_official(schedules):
    from keras_bat.models import BATPretrainer

    ema = schedules["ema"]
    pretrainer = BATPretrainer(encoder={"dim": 32, "depth": 1, "num_heads": 2}, decoder_depth=1, decoder_heads=2,
                               time_frames=64, ema_decay_start=ema["decay_start"], ema_decay_end=ema["decay_end"],
                               ema_warmup_steps=ema["warmup_steps"])
    values = to_numpy(pretrainer.ema_decay(np.arange(len(ema["values_per_step"]))))
    np.testing.assert_allclose(values, ema["values_per_step"], rtol=0, atol=2e-7)  # float32 rounding


def test_schedule_rejects_bad_steps():
    with pytest.raises(ValueError, match="must exceed"):
        WarmupCosineDecay(1e-3, 100, 100)


def _weights_by_name(model):
    return {w.path: w for w in model.trainable_weights}


def test_probing_weight_decay_groups():
    from keras_bat.heads import CGP

    head = CGP(3, 8)
    head.build({"cls_tokens": (None, 2, 16), "patch_tokens": (None, 2, 4, 8, 16)})
    optimizer = paper_adamw(1e-3)
    optimizer.build(head.trainable_weights)
    decayed = {w.path.rsplit("/", 1)[-1]: uses_weight_decay(optimizer, w) for w in head.weights}
    assert decayed == {"layer_logits": False, "prototypes": False, "kernel": True, "bias": False}
    assert optimizer.beta_2 == 0.999


def test_finetuning_layer_decay_scales():
    backbone = BATBackbone(dim=16, depth=3, num_heads=2)
    scales = {w.path: layer_scale(w, depth=3, decay=0.5) for w in backbone.trainable_weights}
    by_part = {}
    for path, scale in scales.items():
        part = "embed" if ("patch_embed" in path or "cls_token" in path) else path.split("/")[0]
        by_part.setdefault(part, set()).add(scale)
    # Embeddings lowest (decay^(depth + 1)), block i at decay^(depth - i), the rest at 1.
    assert by_part == {"embed": {0.5**4}, "blocks_0": {0.5**3}, "blocks_1": {0.5**2},
                       "blocks_2": {0.5}, "pre_norm": {1.0}}
    optimizer = paper_adamw(5e-5, finetune=True, layer_decay=0.5, depth=3)
    assert optimizer.beta_2 == 0.95
    optimizer.build(backbone.trainable_weights)
    decayed = {w.path: uses_weight_decay(optimizer, w) for w in backbone.trainable_weights}
    assert not decayed[backbone.chunk_tokens.cls_token.path] and not decayed[backbone.pre_norm.gamma.path]
    assert decayed[backbone.blocks[0].fc1.kernel.path] and decayed[backbone.patch_embed.proj.kernel.path]
    with pytest.raises(ValueError, match="needs `depth`"):
        paper_adamw(1e-3, layer_decay=0.75)


def test_layer_decay_scales_each_update():
    backbone = BATBackbone(dim=16, depth=2, num_heads=2)
    optimizer = paper_adamw(0.1, finetune=True, layer_decay=0.5, depth=2, weight_decay=0.0)
    variables = [backbone.patch_embed.proj.kernel, backbone.blocks[1].fc1.kernel]
    before = [to_numpy(v) for v in variables]
    optimizer.apply_gradients([(keras.ops.ones(v.shape), v) for v in variables])
    # Adam's first step moves each weight by its learning rate: 0.1 * 0.5^3 and 0.1 * 0.5^1.
    steps = [np.abs(to_numpy(v) - b).mean() for v, b in zip(variables, before)]
    np.testing.assert_allclose(steps, [0.1 * 0.5**3, 0.1 * 0.5], rtol=1e-3)


def test_paper_adamw_steps_equal_keras_adamw():
    # Under torch the update runs in place; the formulas are Keras' AdamW's on every backend.
    rng = np.random.default_rng(0)
    values = [rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(6, 5)).astype("float32")]
    ours = [keras.Variable(v, name=f"w{i}") for i, v in enumerate(values)]
    theirs = [keras.Variable(v, name=f"w{i}") for i, v in enumerate(values)]
    optimizer = paper_adamw(1e-2, weight_decay=0.05)
    optimizer.no_decay_names = ()
    reference = keras.optimizers.AdamW(learning_rate=1e-2, weight_decay=0.05)
    for step in range(3):
        grads = [rng.normal(size=v.shape).astype("float32") for v in values]
        optimizer.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in grads], ours))
        reference.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in grads], theirs))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-5, atol=1e-6)
    assert not np.allclose(to_numpy(ours[0]), values[0])


def test_asymmetric_loss_by_hand():
    logits = np.array([[2.0, -1.0], [0.5, 0.0]], "float32")
    labels = np.array([[1.0, 0.0], [0.0, 1.0]], "float32")
    p = 1 / (1 + np.exp(-logits))
    # gamma_neg 1, gamma_pos 0: positives plain log p, negatives log(1 - p) weighted by p.
    expected = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p) * p)
    assert float(to_numpy(AsymmetricLoss()(labels, logits))) == pytest.approx(expected, rel=1e-5)


def test_softmax_cross_entropy_label_forms():
    logits = np.array([[2.0, 0.0, -1.0], [0.1, 0.2, 0.3]], "float32")
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    integer = SoftmaxCrossEntropy()(np.array([0, 2]), logits)
    one_hot = SoftmaxCrossEntropy()(np.eye(3)[[0, 2]], logits)
    expected = -np.mean(log_p[[0, 1], [0, 2]])
    assert float(to_numpy(integer)) == pytest.approx(expected, rel=1e-5)
    assert float(to_numpy(one_hot)) == pytest.approx(expected, rel=1e-5)
    smoothed = SoftmaxCrossEntropy(label_smoothing=0.3)(np.array([0, 2]), logits)
    targets = np.eye(3)[[0, 2]] * 0.7 + 0.1
    assert float(to_numpy(smoothed)) == pytest.approx(-np.mean((targets * log_p).sum(-1)), rel=1e-5)


def test_average_precision_by_hand():
    # Ranked: +, -, +, -  -> precision 1 at recall 1/2, 2/3 at recall 1.
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx((1 + 2 / 3) / 2)
    # A tie between a positive and a negative counts as one threshold.
    assert average_precision([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert np.isnan(average_precision([0, 0], [0.2, 0.1]))
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    s = np.array([[0.9, 0.2], [0.4, 0.8], [0.3, 0.1], [0.1, 0.3]])
    per_class = [average_precision(y[:, c], s[:, c]) for c in range(2)]
    assert mean_average_precision(y, s) == pytest.approx(np.mean(per_class))
    assert mean_average_precision(y, s, "micro") == pytest.approx(average_precision(y.ravel(), s.ravel()))


@pytest.mark.parametrize("average", ["macro", "micro"])
def test_streaming_map_equals_exact_on_binned_scores(average):
    rng = np.random.default_rng(0)
    labels = (rng.uniform(size=(200, 4, 3)) < 0.3).astype("float32")  # frame-wise (B, T, C)
    bins = rng.integers(0, 100, size=labels.shape)
    probabilities = (bins + 0.5) / 100  # bin centres: binning loses nothing
    logits = np.log(probabilities / (1 - probabilities)).astype("float32")
    metric = MeanAveragePrecision(3, average, num_bins=100)
    metric.update_state(labels[:120], logits[:120])
    metric.update_state(labels[120:], logits[120:])
    expected = mean_average_precision(labels, probabilities, average)
    assert float(to_numpy(metric.result())) == pytest.approx(expected, abs=1e-5)
    metric.reset_state()
    assert float(to_numpy(metric.result())) == 0.0


def _labels_with_empty_classes(rng, examples=60):
    """Multi-hot labels of 5 classes: class 1 has no positive, class 3 no negative (as small
    evaluation sets and AudioSet folds have), and scores with ties."""
    labels = (rng.uniform(size=(examples, 5)) < 0.3).astype("float32")
    labels[:, 1], labels[:, 3] = 0.0, 1.0
    labels[0, 0], labels[1, 0] = 1.0, 0.0  # class 0 has both
    scores = np.round(rng.normal(size=labels.shape) + labels, 1)  # rounded: tied scores
    return labels, scores


def test_average_precision_and_auc_equal_scikit_learn_with_ties_and_empty_classes():
    metrics = require_module("sklearn.metrics")
    labels, scores = _labels_with_empty_classes(np.random.default_rng(31))
    for c in (0, 2, 3, 4):
        assert average_precision(labels[:, c], scores[:, c]) == pytest.approx(
            metrics.average_precision_score(labels[:, c], scores[:, c]), abs=1e-12)
    for c in (0, 2, 4):
        assert roc_auc(labels[:, c], scores[:, c]) == pytest.approx(
            metrics.roc_auc_score(labels[:, c], scores[:, c]), abs=1e-12)
    assert np.isnan(roc_auc(labels[:, 1], scores[:, 1])) and np.isnan(roc_auc(labels[:, 3], scores[:, 3]))
    # Macro mAP over the classes with a positive (4 of 5), AUC over those with both kinds (3 of 5).
    with_positives = [0, 2, 3, 4]
    expected_map = np.mean([metrics.average_precision_score(labels[:, c], scores[:, c]) for c in with_positives])
    assert mean_average_precision(labels, scores) == pytest.approx(expected_map, abs=1e-12)
    results = multilabel_scores(labels, scores)
    expected_auc = metrics.roc_auc_score(labels[:, [0, 2, 4]], scores[:, [0, 2, 4]], average="macro")
    assert results["mAP"] == pytest.approx(expected_map, abs=1e-12)
    assert results["mAUC"] == pytest.approx(expected_auc, abs=1e-12) and results["classes_scored"] == 3
    assert results["d_prime"] == pytest.approx(np.sqrt(2) * norm.ppf(expected_auc), abs=1e-9)


def test_roc_auc_and_d_prime_by_hand():
    # Positives score 0.9 and 0.5, negatives 0.5 and 0.1: of the 4 pairs 3 are won, 1 tied.
    assert roc_auc([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1]) == pytest.approx(3.5 / 4)
    assert roc_auc([0, 1], [0.9, 0.1]) == 0.0
    assert d_prime(0.5) == pytest.approx(0.0, abs=1e-12)
    assert d_prime(0.7602499389065233) == pytest.approx(1.0, abs=1e-9)  # Phi(1 / sqrt(2))
    assert d_prime(1 - 0.7602499389065233) == pytest.approx(-1.0, abs=1e-9)


def test_streaming_map_leaves_out_classes_without_positives():
    rng = np.random.default_rng(32)
    labels, _ = _labels_with_empty_classes(rng)
    bins = rng.integers(0, 50, size=labels.shape)
    probabilities = (bins + 0.5) / 50  # bin centres: binning loses nothing
    logits = np.log(probabilities / (1 - probabilities)).astype("float32")
    metric = MeanAveragePrecision(5, "macro", num_bins=50)
    for part in np.array_split(np.arange(len(labels)), 3):
        metric.update_state(labels[part], logits[part])
    expected = np.mean([average_precision(labels[:, c], probabilities[:, c]) for c in (0, 2, 3, 4)])
    assert float(to_numpy(metric.result())) == pytest.approx(expected, abs=1e-5)
    assert mean_average_precision(labels, probabilities) == pytest.approx(expected, abs=1e-9)


def test_multilabel_runs_report_d_prime_beside_map():
    from keras_bat.workflows.probe import task_metrics

    labels, scores = _labels_with_empty_classes(np.random.default_rng(33))
    reported = task_metrics("multilabel", [None] * len(labels), scores, list(labels), {})
    assert set(reported) == {"mAP", "mAUC", "d_prime"}
    assert reported == {k: v for k, v in multilabel_scores(labels, scores).items() if k in reported}


def test_logit_f1():
    metric = LogitF1Score("micro")
    metric.update_state(np.array([[1, 0], [1, 1]], "float32"), np.array([[3.0, -2.0], [-1.0, 2.0]], "float32"))
    assert float(to_numpy(metric.result())) == pytest.approx(0.8)  # tp 2, fp 0, fn 1


def test_ctc_greedy_decode_merges_and_drops_blanks():
    steps = [1, 1, 0, 1, 2, 2, 0, 0, 3]
    log_probs = np.log(np.eye(4)[steps][None] * 0.97 + 0.01)
    assert ctc_greedy_decode(log_probs) == [[1, 1, 2, 3]]


def test_gradient_accumulation_with_paper_adamw():
    backbone = BATBackbone(dim=16, depth=2, num_heads=2)
    optimizer = paper_adamw(0.1, finetune=True, layer_decay=0.5, depth=2, gradient_accumulation_steps=2)
    variable = backbone.blocks[0].fc1.kernel
    before = to_numpy(variable)
    optimizer.apply_gradients([(keras.ops.ones(variable.shape), variable)])
    np.testing.assert_array_equal(to_numpy(variable), before)  # first of two steps: only accumulated
    optimizer.apply_gradients([(keras.ops.ones(variable.shape), variable)])
    assert np.abs(to_numpy(variable) - before).mean() == pytest.approx(0.1 * 0.5**2, rel=1e-2)


@pytest.mark.parametrize("finetune", [False, True])
def test_paper_adamw_leaves_out_of_weight_decay_what_the_paper_does(finetune):
    """With zero gradients AdamW's step is its decoupled weight decay alone: w -= lr * wd * w."""
    from keras_bat.heads import CGP, VQTHead
    from keras_bat.models import AudioClassifier

    x = np.zeros((1, 32, 128), "float32")
    probe = AudioClassifier(BATBackbone(dim=32, depth=2, num_heads=2), CGP(2, 4))
    probe(x)
    vqt = AudioClassifier(BATBackbone(dim=32, depth=2, num_heads=2, num_query_tokens=2),
                          VQTHead(2, depth=2, dim=32, num_query_tokens=2))
    vqt(x)
    variables = {v.path: v for v in probe.weights + vqt.weights if v.trainable or "chunk_tokens" in v.path}
    for v in variables.values():
        v.assign(np.ones(v.shape, "float32"))
    optimizer = paper_adamw(0.1, finetune=finetune, weight_decay=0.5)
    optimizer.apply_gradients([(keras.ops.zeros(v.shape), v) for v in variables.values()])
    kept = {"cls_token", "pos_embed"} | (set() if finetune else {"layer_logits", "prototypes", "query_tokens"})
    names = set()
    for path, v in variables.items():
        name = path.rsplit("/", 1)[-1]
        names.add(name)
        expected = 1.0 if name in kept or len(v.shape) == 1 else 1.0 - 0.1 * 0.5
        np.testing.assert_allclose(to_numpy(v), expected, rtol=1e-6, err_msg=path)
    assert {"cls_token", "pos_embed", "layer_logits", "prototypes", "query_tokens", "kernel"} <= names
