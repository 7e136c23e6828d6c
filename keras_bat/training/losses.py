"""Losses of the paper's tasks."""

import keras
from keras import ops

from keras_bat.errors import UsageError
from keras_bat.ops.keras_internals import scale_loss_for_replicas


@keras.saving.register_keras_serializable(package="keras_bat")
class AsymmetricLoss(keras.losses.Loss):
    """Asymmetric (focal-style) binary cross-entropy for multi-label logits.

    Per element `-[y log p (1 - p)^gamma_pos + (1 - y) log(q) (1 - q)^gamma_neg]`
    with `q = min(1 - p + clip, 1)`, averaged over classes and the batch, the
    focusing weights held constant in the gradient (as the reference). The
    paper uses `gamma_neg=1, gamma_pos=0, clip=0`.

    Args:
        gamma_neg: float, focusing exponent of negatives. Defaults to `1.0`.
        gamma_pos: float, focusing exponent of positives. Defaults to `0.0`.
        clip: float, probability margin added to negatives. Defaults to `0.0`.
        eps: float, floor inside the logarithms. Defaults to `1e-8`.
    """

    def __init__(self, gamma_neg=1.0, gamma_pos=0.0, clip=0.0, eps=1e-8, name="asymmetric_loss",
                 reduction="sum_over_batch_size", **kwargs):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        p = ops.sigmoid(ops.cast(y_pred, "float32"))
        q = ops.minimum(1.0 - p + self.clip, 1.0)  # probability of "negative"
        positive = y_true * ops.log(ops.maximum(p, self.eps))
        negative = (1.0 - y_true) * ops.log(ops.maximum(q, self.eps))
        weight = ops.stop_gradient(
            y_true * ops.power(1.0 - p, self.gamma_pos) + (1.0 - y_true) * ops.power(1.0 - q, self.gamma_neg))
        return -ops.mean((positive + negative) * weight, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"gamma_neg": self.gamma_neg, "gamma_pos": self.gamma_pos, "clip": self.clip,
                       "eps": self.eps})
        return config


@keras.saving.register_keras_serializable(package="keras_bat")
class SoftmaxCrossEntropy(keras.losses.Loss):
    """Softmax cross-entropy on logits for integer, one-hot or soft (mixup) labels.

    Args:
        label_smoothing: float, mixes targets with the uniform distribution.
            Defaults to `0.0`.
    """

    def __init__(self, label_smoothing=0.0, name="softmax_cross_entropy", reduction="sum_over_batch_size",
                 **kwargs):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        num_classes = y_pred.shape[-1]
        if len(y_true.shape) < len(y_pred.shape) or y_true.shape[-1] != num_classes:
            y_true = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), ops.shape(y_pred)[:-1]), num_classes)
        y_true = ops.cast(y_true, "float32")
        if self.label_smoothing:
            y_true = y_true * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        return -ops.sum(y_true * ops.log_softmax(y_pred, axis=-1), axis=-1)

    def get_config(self):
        config = super().get_config()
        config["label_smoothing"] = self.label_smoothing
        return config


def training_loss(model, loss):
    """The loss a custom `compute_loss` returns: `loss` plus the losses the model's layers add
    (e.g. Head2Toe's group lasso), in float32, divided by the replicas of a tf.distribute
    strategy as Keras divides its own losses (the replicas' gradients are summed)."""
    extra = [ops.cast(layer_loss, "float32") for layer_loss in model.losses]
    return scale_loss_for_replicas(loss + ops.sum(ops.stack(extra)) if extra else loss)


def ctc_loss(labels, label_lengths, log_probs, logit_lengths=None, blank_index=0):
    """Mean CTC loss of log-probabilities `(batch, steps, classes)`.

    Args:
        labels: int tensor `(batch, max_label_length)`, padded.
        label_lengths: int tensor `(batch,)`, the true label lengths.
        log_probs: tensor `(batch, steps, classes)` (log-softmax or logits).
        logit_lengths: optional int tensor `(batch,)`; all steps by default.
        blank_index: int, the CTC blank. Defaults to `0`.
    """
    if label_lengths is None:
        raise UsageError("CTC needs the label lengths: pass y as {'labels': ..., 'label_lengths': ...}.")
    batch = ops.shape(log_probs)[0]
    if logit_lengths is None:
        logit_lengths = ops.full((batch,), log_probs.shape[1], dtype="int32")
    loss = ops.ctc_loss(ops.cast(labels, "int32"), ops.cast(log_probs, "float32"),
                        ops.cast(label_lengths, "int32"), ops.cast(logit_lengths, "int32"),
                        mask_index=blank_index)
    return ops.mean(loss)


def ctc_greedy_decode(log_probs, blank_index=0):
    """Greedy CTC decoding: best class per step, repeats merged, blanks dropped.

    Returns:
        A list (one per example) of lists of class indices.
    """
    import numpy as np

    best = np.argmax(ops.convert_to_numpy(log_probs), axis=-1)  # B, T
    decoded = []
    for row in best:
        merged = [int(c) for i, c in enumerate(row) if i == 0 or c != row[i - 1]]
        decoded.append([c for c in merged if c != blank_index])
    return decoded
