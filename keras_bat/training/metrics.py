"""Evaluation metrics: average precision (exact and streaming), ROC AUC and d-prime, F1 on logits."""

import keras
import numpy as np
from keras import ops

from keras_bat.errors import UsageError


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
        raise UsageError(f"`average` must be 'macro' or 'micro'. Received: {average!r}")
    scores = [average_precision(y_true[:, c], y_score[:, c]) for c in range(y_true.shape[1])]
    return float(np.nanmean(scores)) if not np.all(np.isnan(scores)) else float("nan")


def roc_auc(y_true, y_score):
    """Area under the ROC curve of one class, exact: the chance that a positive
    scores above a negative, ties counting one half (the Mann-Whitney
    statistic, as scikit-learn's `roc_auc_score`).

    Returns:
        float, or `nan` when the labels hold no positive or no negative.
    """
    from scipy.stats import rankdata

    y_true = np.asarray(y_true, dtype="float64").ravel() > 0
    positives, negatives = int(y_true.sum()), int((~y_true).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(np.asarray(y_score, dtype="float64").ravel())  # ties share their mean rank
    return float((ranks[y_true].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def d_prime(auc):
    """The sensitivity index of an ROC AUC: `sqrt(2) * Phi^-1(auc)` (0 at chance)."""
    from scipy.stats import norm

    return float(np.sqrt(2.0) * norm.ppf(auc))


def multilabel_scores(y_true, y_score):
    """AudioSet's clip-level metrics: macro mAP, macro ROC AUC and the d-prime
    of that AUC (the convention of the AudioSet papers), over the classes the
    labels can score (a class without positives has no AP; without positives
    or without negatives, no AUC).

    Args:
        y_true: array `(..., num_classes)` of 0/1 labels.
        y_score: array of scores (logits or probabilities), same shape.

    Returns:
        dict with `mAP`, `mAUC`, `d_prime` and `classes_scored` (classes with an AUC).
    """
    y_true = np.asarray(y_true).reshape(-1, np.shape(y_true)[-1])
    y_score = np.asarray(y_score).reshape(y_true.shape)
    aucs = np.array([roc_auc(y_true[:, c], y_score[:, c]) for c in range(y_true.shape[1])])
    scored = ~np.isnan(aucs)
    mean_auc = float(aucs[scored].mean()) if scored.any() else float("nan")
    return {"mAP": mean_average_precision(y_true, y_score, "macro"), "mAUC": mean_auc,
            "d_prime": d_prime(mean_auc), "classes_scored": int(scored.sum())}


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
            raise UsageError(f"`average` must be 'macro' or 'micro'. Received: {average!r}")
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


def _class_accuracy(y_true, y_pred):
    if len(y_true.shape) == len(y_pred.shape):  # one-hot or mixed labels
        y_true = ops.argmax(y_true, axis=-1)
    y_true = ops.reshape(ops.cast(y_true, "int32"), ops.shape(y_pred)[:-1])
    return ops.cast(ops.equal(y_true, ops.cast(ops.argmax(y_pred, axis=-1), "int32")), "float32")


@keras.saving.register_keras_serializable(package="keras_bat")
class ClassAccuracy(keras.metrics.MeanMetricWrapper):
    """Accuracy for integer labels, or one-hot / mixup labels (their argmax)."""

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(fn=_class_accuracy, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


# --- Sound event detection -----------------------------------------------------------

class EventDecoder:
    """Sound events from a stream of frame probabilities `(frames, classes)`, block by block:
    each class's probabilities median-filtered over `window` frames (edges repeat the first and
    last frame, as `scipy.ndimage.median_filter(..., mode="nearest")`), an event wherever the
    filtered probability is at or above the class's threshold, scored by the highest unfiltered
    probability inside it. Keeps `window - 1` frames, whatever the stream's length.

    Args:
        thresholds: array `(classes,)`, each class's threshold.
        window: odd int >= 1, the median filter's length in frames (1: no filtering).
    """

    def __init__(self, thresholds, window=1):
        if int(window) != window or window < 1 or window % 2 == 0:
            raise UsageError(f"The median filter's window must be an odd number of frames >= 1. Received: {window!r}")
        self.thresholds = np.asarray(thresholds, "float32")
        self.half = int(window) // 2
        self.context = None  # the last frames not yet filtered, and the left context
        self.frame = 0  # index of the next filtered frame
        self.onsets = np.full(len(self.thresholds), -1)
        self.peaks = np.zeros(len(self.thresholds), "float32")

    def add(self, probabilities):
        """Adds the next frames; returns the events that ended among them, `(first frame, end
        frame (exclusive), class, score)`."""
        probabilities = np.asarray(probabilities, "float32")
        if not len(probabilities):
            return []
        if self.context is None:
            self.context = np.repeat(probabilities[:1], self.half, axis=0)
        return self._filter(np.concatenate([self.context, probabilities]))

    def finish(self):
        """The events still open at the end of the stream (and those the last frames end)."""
        if self.context is None:
            return []
        events = self._filter(np.concatenate([self.context, np.repeat(self.context[-1:], self.half, axis=0)]))
        for label in np.flatnonzero(self.onsets >= 0):
            events.append((int(self.onsets[label]), self.frame, int(label), float(self.peaks[label])))
        self.onsets[:] = -1
        return events

    def _filter(self, frames):
        ready = len(frames) - 2 * self.half
        if ready <= 0:
            self.context = frames
            return []
        windows = np.lib.stride_tricks.sliding_window_view(frames, 2 * self.half + 1, axis=0)
        filtered = np.median(windows, axis=-1)
        events = self._threshold(filtered >= self.thresholds, frames[self.half:self.half + ready])
        self.context = frames[ready:]
        return events

    def _threshold(self, active, raw):
        events = []
        for row, probabilities in zip(active, raw):
            starting = row & (self.onsets < 0)
            self.onsets[starting] = self.frame
            self.peaks[starting] = 0.0
            self.peaks[row] = np.maximum(self.peaks[row], probabilities[row])
            for label in np.flatnonzero(~row & (self.onsets >= 0)):
                events.append((int(self.onsets[label]), self.frame, int(label), float(self.peaks[label])))
                self.onsets[label] = -1
            self.frame += 1
        return events


def frames_to_events(probabilities, patch_seconds, threshold=0.3, median_filter=3):
    """Events `(onset_s, offset_s, class_index)` of a whole clip's frame-wise probabilities
    `(time_patches, classes)` on a grid of `patch_seconds` (`EncoderModel.seconds_per_patch`), by
    `EventDecoder`: a median filter of `median_filter` (odd) patches, a threshold, runs of active
    patches (the reference's DCASE2016 post-processing)."""
    probabilities = np.asarray(probabilities, "float32")
    thresholds = np.broadcast_to(np.asarray(threshold, "float32"), probabilities.shape[1:])
    decoder = EventDecoder(thresholds, median_filter)
    events = decoder.add(probabilities) + decoder.finish()
    return sorted((first * patch_seconds, end * patch_seconds, label) for first, end, label, _ in events)


def event_based_f1(reference, estimated, collar=0.2):
    """Event-based onset F1 (micro over classes and files), offsets ignored.

    An estimated event matches a reference event of the same file and class
    whose onset lies within `collar` seconds; events are paired by maximum
    bipartite matching. This is sed_eval's `EventBasedMetrics(t_collar=collar,
    evaluate_onset=True, evaluate_offset=False)` overall F-measure.

    Args:
        reference, estimated: dict `{file: [(onset_s, offset_s, class), ...]}`
            (or one list for a single file).

    Returns:
        dict with `f1`, `precision`, `recall`, `true_positives`,
        `reference_events`, `estimated_events`.
    """
    from scipy.optimize import linear_sum_assignment

    if not isinstance(reference, dict):
        reference, estimated = {"": reference}, {"": estimated}
    true_positives = num_reference = num_estimated = 0
    for name in set(reference) | set(estimated):
        ref, est = reference.get(name, []), estimated.get(name, [])
        num_reference, num_estimated = num_reference + len(ref), num_estimated + len(est)
        for c in {e[2] for e in ref} & {e[2] for e in est}:
            ref_onsets = np.array([e[0] for e in ref if e[2] == c])
            est_onsets = np.array([e[0] for e in est if e[2] == c])
            hits = np.abs(ref_onsets[:, None] - est_onsets[None, :]) <= collar
            rows, cols = linear_sum_assignment(hits, maximize=True)
            true_positives += int(hits[rows, cols].sum())
    precision = true_positives / num_estimated if num_estimated else 0.0
    recall = true_positives / num_reference if num_reference else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall, "true_positives": true_positives,
            "reference_events": num_reference, "estimated_events": num_estimated}


# --- Speech recognition --------------------------------------------------------------

def error_rates(references, hypotheses):
    """Word and character error rates over a corpus (jiwer), as fractions."""
    import jiwer

    references, hypotheses = list(references), list(hypotheses)
    if len(references) != len(hypotheses) or not references:
        raise UsageError(f"Need as many hypotheses as references (at least one); received "
                         f"{len(references)} references and {len(hypotheses)} hypotheses.")
    return {"wer": jiwer.wer(references, hypotheses), "cer": jiwer.cer(references, hypotheses)}


def cross_validation_summary(fold_results):
    """Mean and standard deviation (population, as the paper reports) of each
    metric over folds: `{metric: {"mean", "std", "folds": [...]}}`."""
    keys = fold_results[0].keys()
    return {k: {"mean": float(np.mean([r[k] for r in fold_results])),
                "std": float(np.std([r[k] for r in fold_results])),
                "folds": [float(r[k]) for r in fold_results]} for k in keys}
