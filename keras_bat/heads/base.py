"""Pieces shared by the heads: pooling of backbone features and the layer gate."""

import numpy as np
from keras import ops

from keras_bat.errors import UsageError
from keras_bat.layers.chunk_merge import WHOLE_CLIP_MERGES

POOLINGS = ("cls", "mean", "frame")
CLASSIFICATION_TASKS = ("multiclass", "multilabel", "frame")


class HeadContract:
    """What a head declares to the task model, the feature cache and the recipes.

    Attributes:
        tasks: the tasks the head predicts.
        reads_query_tokens: the head's query tokens run inside the backbone
            (VQT): the backbone is built with them, gradients flow through the
            frozen encoder, and no feature cache can serve the head.
    """

    tasks = CLASSIFICATION_TASKS
    reads_query_tokens = False

    @classmethod
    def cache_tokens(cls, pooling, task):
        """What a feature cache must hold for this head: `"cls"` (class tokens
        only), `"all"` (class and patch tokens), or `None` (no cache can serve it)."""
        return None if cls.reads_query_tokens else "all"

    @classmethod
    def from_settings(cls, num_classes, task, backbone, pooling="cls", num_prototypes=10000, use_norm=False,
                      dropout=0.0, lasso_weight=1e-4, num_query_tokens=10):
        """The head of a recipe: each head takes the settings it has."""
        raise NotImplementedError

    def chunk_summary(self, features):
        """What the head keeps of one time chunk's features when a long clip is
        encoded a chunk at a time (`AudioClassifier.predict_long`).

        Returns:
            dict `name -> (tensor, merge)`, merged over a clip's chunks by
            `keras_bat.layers.chunk_merge.ChunkSummaries`: `merge` is `"chunk_mean"` (averaged over chunks,
            as the backbone averages class tokens), `"token_mean"` (averaged
            over all the clip's tokens), `"min"`, `"max"`, or an int axis along
            which the chunks' time patches are concatenated. This default keeps
            the whole feature dict, which is exact for any head; heads keep
            less where their pooling allows, so that memory does not grow with
            the clip's length.
        """
        return {name: (value, WHOLE_CLIP_MERGES[name]) for name, value in features.items()}

    def call_on_summary(self, summary, training=None):
        """The head's output from its merged chunk summaries (see `chunk_summary`)."""
        return self(summary, training=training)

    def official_parameters(self):
        """`(params, constants)`: the official code's name of each of the head's
        variables (`official name -> keras_bat.convert.mapping.Param`), and
        buffers the official head stores that must equal the configuration."""
        raise TypeError(f"No official parameters are known for {type(self).__name__}.")

    def official_layers_and_dim(self, shape):
        """`(layers, dim)` of the features this head reads, from official
        weights (`shape(name)` is a parameter's shape), to build it before loading."""
        return 1, shape("fc.weight")[1]


def pooled_patch_summary(features, pooling):
    """A chunk summary of the class tokens and of the patch tokens reduced as
    `pool_layers` reduces them: averaged (`"mean"`) or averaged over frequency
    per time patch (`"frame"`); `pool_layers` reads the reduced tokens alike."""
    summary = {"cls_tokens": (features["cls_tokens"], "chunk_mean")}
    patches = features["patch_tokens"]  # B, L, T, F, D
    if pooling == "mean":
        summary["patch_tokens"] = (ops.mean(patches, axis=(2, 3), keepdims=True), "token_mean")  # B, L, 1, 1, D
    elif pooling == "frame":
        summary["patch_tokens"] = (ops.mean(patches, axis=3, keepdims=True), 2)  # B, L, T, 1, D
    return summary


def task_pooling(task, pooling):
    """Frame tasks pool per time patch, whatever the recipe's pooling."""
    return "frame" if task == "frame" else pooling


def check_pooling(pooling, allowed=POOLINGS, head="head"):
    if pooling not in allowed:
        raise UsageError(f"{head} supports pooling in {allowed}. Received: pooling={pooling!r}")
    return pooling


def check_features(features, head, needs=("cls_tokens", "patch_tokens")):
    """Checks that a head got the backbone's output dict (of tensors or of shapes)."""
    if not isinstance(features, dict) or any(key not in features for key in needs):
        got = sorted(features) if isinstance(features, dict) else type(features).__name__
        raise UsageError(
            f"{head} expects the backbone's output dict with keys {list(needs)}. Received: {got}")


def logits_shape(features_shape, pooling, num_classes):
    """Output shape of a classifier head: per clip, or per time patch for `"frame"`."""
    patches = features_shape["patch_tokens"]
    if pooling == "frame":
        return (patches[0], patches[2], num_classes)
    return (patches[0], num_classes)


def l2_normalize(x, axis=-1):
    """`x / max(||x||, 1e-12)`, as torch.nn.functional.normalize."""
    norm = ops.sqrt(ops.sum(ops.square(x), axis=axis, keepdims=True))
    return x / ops.maximum(norm, 1e-12)


def pool_layers(features, pooling):
    """Pools every layer's tokens.

    Args:
        features: dict with `cls_tokens` `(B, L, D)` and `patch_tokens`
            `(B, L, T, F, D)`.
        pooling: `"cls"` (class tokens), `"mean"` (patch average) or
            `"frame"` (patches averaged over frequency, per time patch).

    Returns:
        `(B, L, D)` for `cls` and `mean`, `(B, L, T, D)` for `frame`.
    """
    if pooling == "cls":
        return features["cls_tokens"]
    patches = features["patch_tokens"]
    if pooling == "mean":
        return ops.mean(patches, axis=(2, 3))
    return ops.mean(patches, axis=3)


def mix_layers(tokens, layer_weights):
    """Convex mix over axis 1 of `tokens` `(B, L, ...)` with weights `(L,)`."""
    weights = ops.reshape(ops.cast(layer_weights, tokens.dtype), (1, -1) + (1,) * (len(tokens.shape) - 2))
    return ops.sum(tokens * weights, axis=1)


class LayerGateMixin:
    """A softmax (convex) gate over the encoder's layers, readable as `layer_weights`."""

    def add_layer_gate(self, num_layers):
        self.layer_logits = self.add_weight(
            shape=(num_layers,), initializer="zeros", name="layer_logits")

    def gate(self):
        return ops.softmax(ops.cast(self.layer_logits, "float32"))

    @property
    def layer_weights(self):
        """The softmax layer weights as a NumPy array `(num_layers,)`; they sum to 1."""
        return np.asarray(ops.convert_to_numpy(self.gate()))


def plot_layer_weights(heads, labels=None, ax=None):
    """Bar chart of the layer gate of one or several heads.

    Args:
        heads: a head with `layer_weights` (CGP, LayerMixedLinear, ASRHead), a
            weight array, or a list of them.
        labels: optional legend labels, one per head.
        ax: optional matplotlib axes to draw into.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    if not isinstance(heads, (list, tuple)):
        heads = [heads]
    weights = [np.asarray(h.layer_weights if hasattr(h, "layer_weights") else h) for h in heads]
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4, 0.5 * len(weights[0]) + 2), 3))
    width = 0.8 / len(weights)
    for i, w in enumerate(weights):
        label = labels[i] if labels else None
        ax.bar(np.arange(len(w)) + (i - (len(weights) - 1) / 2) * width, w, width, label=label)
    ax.set(xlabel="encoder block", ylabel="gate weight", title="layer gate (softmax over blocks)",
           xticks=np.arange(len(weights[0])))
    if labels:
        ax.legend()
    ax.figure.tight_layout()
    return ax.figure

