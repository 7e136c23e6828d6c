"""Evaluation metrics: average precision (exact and streaming) and F1 on logits."""

import keras
import numpy as np
from keras import ops


def average_precision(y_true, y_score):
    """Exact average precision of one class (tied scores form one threshold).

    `AP = sum_n (R_n - R_{n-1}) P_n` over the distinct scores, highest first,
    as scikit-learn's `average_precision_score`.

    Args:
        y_true: array `(N,)` of 0/1 labels.
        y_score: array `(N,)` of scores.

    Returns:
        float, or `nan` when there is no positive label.
    """
    y_true = np.asarray(y_true, dtype="float64").ravel()
    y_score = np.asarray(y_score, dtype="float64").ravel()
    positives = y_true.sum()
    if positives == 0:
        return float("nan")
    order = np.argsort(-y_score, kind="mergesort")
    y_true, y_score = y_true[order], y_score[order]
    last_of_tie = np.r_[np.diff(y_score) != 0, True]
    true_positives = np.cumsum(y_true)[last_of_tie]
    predicted = (np.arange(len(y_true)) + 1)[last_of_tie]
    precision = true_positives / predicted
    recall_gain = np.diff(np.r_[0.0, true_positives]) / positives
    return float(np.sum(recall_gain * precision))


def mean_average_precision(y_true, y_score, average="macro"):
    """Mean average precision over classes, exact.

    Args:
        y_true: array `(..., num_classes)` of 0/1 labels (frame axes are flattened).
        y_score: array of scores, same shape.
        average: `"macro"` (mean of per-class AP, classes without positives
            left out) or `"micro"` (all decisions pooled).

    Returns:
        float.
    """
    y_true = np.asarray(y_true).reshape(-1, np.shape(y_true)[-1])
    y_score = np.asarray(y_score).reshape(y_true.shape)
    if average == "micro":
        return average_precision(y_true.ravel(), y_score.ravel())
    if average != "macro":
        raise ValueError(f"`average` must be 'macro' or 'micro'. Received: {average!r}")
    scores = [average_precision(y_true[:, c], y_score[:, c]) for c in range(y_true.shape[1])]
    return float(np.nanmean(scores)) if not np.all(np.isnan(scores)) else float("nan")


@keras.saving.register_keras_serializable(package="keras_bat")
class MeanAveragePrecision(keras.metrics.Metric):
    """Streaming mean average precision for multi-label (and frame-wise) outputs.

    Scores are binned into `num_bins` equal bins of [0, 1] per class; the AP is
    computed over the bins as thresholds. It equals the exact AP of the scores
    rounded to the bins (so it differs from the exact AP only where different
    scores share a bin), and it runs inside compiled training loops.

    Args:
        num_classes: int, number of classes.
        average: `"macro"` or `"micro"`. Defaults to `"macro"`.
        from_logits: bool, apply a sigmoid to predictions first. Defaults to `True`.
        num_bins: int, score resolution. Defaults to `1000`.
    """

    def __init__(self, num_classes, average="macro", from_logits=True, num_bins=1000, name=None, **kwargs):
        if average not in ("macro", "micro"):
            raise ValueError(f"`average` must be 'macro' or 'micro'. Received: {average!r}")
        super().__init__(name=name or f"{average}_mAP", **kwargs)
        self.num_classes, self.average = num_classes, average
        self.from_logits, self.num_bins = from_logits, num_bins
        shape = (num_classes * num_bins,)
        self.positives = self.add_variable(shape=shape, initializer="zeros", name="positives")
        self.negatives = self.add_variable(shape=shape, initializer="zeros", name="negatives")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.cast(y_pred, "float32")
        if self.from_logits:
            y_pred = ops.sigmoid(y_pred)
        y_pred = ops.reshape(y_pred, (-1, self.num_classes))
        y_true = ops.reshape(ops.cast(y_true, "float32"), (-1, self.num_classes))
        bins = ops.clip(ops.cast(ops.floor(y_pred * self.num_bins), "int32"), 0, self.num_bins - 1)
        index = ops.reshape(bins + ops.arange(self.num_classes, dtype="int32")[None] * self.num_bins, (-1,))
        size = self.num_classes * self.num_bins
        labels = ops.reshape(y_true, (-1,))
        self.positives.assign_add(ops.segment_sum(labels, index, num_segments=size))
        self.negatives.assign_add(ops.segment_sum(1.0 - labels, index, num_segments=size))

    def result(self):
        # Highest scores first.
        positives = ops.flip(ops.reshape(self.positives, (self.num_classes, self.num_bins)), axis=1)
        negatives = ops.flip(ops.reshape(self.negatives, (self.num_classes, self.num_bins)), axis=1)
        if self.average == "micro":
            positives = ops.sum(positives, axis=0, keepdims=True)
            negatives = ops.sum(negatives, axis=0, keepdims=True)
        true_positives = ops.cumsum(positives, axis=1)
        predicted = true_positives + ops.cumsum(negatives, axis=1)
        precision = ops.divide_no_nan(true_positives, predicted)
        total = ops.sum(positives, axis=1)
        ap = ops.sum(positives * precision, axis=1) / ops.maximum(total, 1.0)
        present = ops.cast(total > 0, "float32")
        return ops.sum(ap * present) / ops.maximum(ops.sum(present), 1.0)

    def reset_state(self):
        for variable in (self.positives, self.negatives):
            variable.assign(ops.zeros(variable.shape, variable.dtype))

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "average": self.average,
                       "from_logits": self.from_logits, "num_bins": self.num_bins})
        return config


@keras.saving.register_keras_serializable(package="keras_bat")
class LogitF1Score(keras.metrics.F1Score):
    """`keras.metrics.F1Score` on logits (sigmoid first), frame axes flattened.

    Args:
        average: `"macro"`, `"micro"`, `"weighted"` or `None`. Defaults to `"macro"`.
        threshold: float, on probabilities. Defaults to `0.5`.
    """

    def __init__(self, average="macro", threshold=0.5, name=None, **kwargs):
        super().__init__(average=average, threshold=threshold, name=name or f"{average}_f1", **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        num_classes = y_pred.shape[-1]
        y_pred = ops.sigmoid(ops.reshape(ops.cast(y_pred, "float32"), (-1, num_classes)))
        y_true = ops.reshape(ops.cast(y_true, "float32"), (-1, num_classes))
        super().update_state(y_true, y_pred, sample_weight)
