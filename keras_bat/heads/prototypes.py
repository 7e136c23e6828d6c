"""Prototype heads: Convex Gated Probing (CGP) and binarised prototypes."""

import keras
from keras import ops

from keras_bat.convert import mapping
from keras_bat.errors import UsageError
from keras_bat.heads.base import (
    HeadContract,
    LayerGateMixin,
    check_features,
    check_pooling,
    l2_normalize,
    logits_shape,
    mix_layers,
    task_pooling,
)
from keras_bat.layers.base import Layer
from keras_bat.layers.dense import Dense
from keras_bat.layers.transformer import seeded_dropout


class _PrototypeHead(HeadContract, Layer):
    """Cosine similarities of tokens to learned prototypes, pooled, then Dense."""

    features_per_prototype = 1

    @classmethod
    def from_settings(cls, num_classes, task, backbone, pooling="cls", num_prototypes=10000, dropout=0.2,
                      **settings):
        return cls(num_classes, num_prototypes, pooling=task_pooling(task, pooling), dropout=dropout)

    def __init__(self, num_classes, num_prototypes=10000, pooling="cls", dropout=0.2, **kwargs):
        super().__init__(**kwargs)
        if num_prototypes < 1:
            raise UsageError(f"`num_prototypes` must be positive. Received: {num_prototypes}")
        self.num_classes = num_classes
        self.num_prototypes = num_prototypes
        self.pooling = pooling
        self.dropout = dropout
        self.head_dropout = seeded_dropout(dropout)
        self.fc = Dense(num_classes, name="fc")

    def build(self, features_shape):
        check_features(features_shape, type(self).__name__)
        dim = features_shape["cls_tokens"][-1]
        self.prototypes = self.add_weight(
            shape=(self.num_prototypes, dim), initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="prototypes")
        self.fc.build((None, self.features_per_prototype * self.num_prototypes))
        self.built = True

    def normalized_prototypes(self):
        return l2_normalize(self.prototypes)

    def compute_output_shape(self, features_shape):
        return logits_shape(features_shape, self.pooling, self.num_classes)

    def official_parameters(self):
        params = mapping.linear("fc", self.fc)
        # Official prototypes are 1 x 1 convolution filters (P, D, 1, 1).
        params["prototype_vectors"] = mapping.Param(self.prototypes, to_keras=lambda w: w[:, :, 0, 0],
                                             to_official=lambda w: w[:, :, None, None])
        if isinstance(self, LayerGateMixin):
            params["block_attention"] = mapping.Param(self.layer_logits)
        return params, {}

    def official_layers_and_dim(self, shape):
        layers = shape("block_attention")[0] if isinstance(self, LayerGateMixin) else 1
        return layers, shape("prototype_vectors")[1]

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "num_prototypes": self.num_prototypes,
                       "pooling": self.pooling, "dropout": self.dropout})
        return config


@keras.saving.register_keras_serializable(package="keras_bat")
class CGP(LayerGateMixin, _PrototypeHead):
    """Convex Gated Probing.

    Every layer's tokens are L2-normalised and mixed by a softmax (convex)
    gate over layers; the cosine similarities of the mixed tokens to
    `num_prototypes` L2-normalised prototypes are pooled into three features
    per prototype, `[min over patches, middle, max over patches]`, where the
    middle is the class token's similarity (`pooling="cls"`) or the mean
    over patches (`"mean"`); `"frame"` pools over frequency per time patch.
    The `3 * num_prototypes` features (prototype-major) go through dropout
    and a linear layer.

    Args:
        num_classes: int, number of outputs.
        num_prototypes: int, learned prototypes. Defaults to `10000`.
        pooling: `"cls"`, `"mean"` or `"frame"`. Defaults to `"cls"`.
        dropout: float, dropout on the similarity features. Defaults to `0.2`.

    Call arguments:
        features: the backbone's output dict.

    Returns:
        Logits `(batch, num_classes)`, or `(batch, time_patches, num_classes)`
        with `pooling="frame"`.
    """

    features_per_prototype = 3

    def __init__(self, num_classes, num_prototypes=10000, pooling="cls", dropout=0.2, **kwargs):
        check_pooling(pooling, head="CGP")
        super().__init__(num_classes, num_prototypes, pooling, dropout, **kwargs)

    def build(self, features_shape):
        self.add_layer_gate(features_shape["cls_tokens"][1])
        super().build(features_shape)

    def similarity_features(self, features):
        """The `3 * num_prototypes` features (per time patch for `"frame"`): a
        whole clip is summarised as one chunk."""
        return self._pooled_features({name: value for name, (value, _) in self.chunk_summary(features).items()})

    def chunk_summary(self, features):
        """Similarities pooled over the chunk's tokens: min, max and mean (or the
        class tokens), or per time patch for `"frame"`."""
        check_features(features, "CGP")
        patches = mix_layers(l2_normalize(features["patch_tokens"]), self.gate())  # B, T, F, D
        prototypes = ops.cast(self.normalized_prototypes(), patches.dtype)  # P, D
        time_patches, freq_patches = patches.shape[1], patches.shape[2]
        flat = ops.matmul(ops.reshape(patches, (-1, time_patches * freq_patches, patches.shape[3])),
                          ops.transpose(prototypes))  # B, N, P (one product, no relayout)
        if self.pooling == "frame":
            similarity = ops.reshape(flat, (-1, time_patches, freq_patches, self.num_prototypes))
            pooled = [ops.min(similarity, axis=2), ops.mean(similarity, axis=2), ops.max(similarity, axis=2)]
            return {"frame_features": (self._stack(pooled), 1)}  # B, T, 3 * P
        summary = {"min": (ops.min(flat, axis=1), "min"), "max": (ops.max(flat, axis=1), "max")}  # B, P each
        if self.pooling == "cls":
            summary["cls_tokens"] = (features["cls_tokens"], "chunk_mean")
        else:
            summary["mean"] = (ops.mean(flat, axis=1), "token_mean")
        return summary

    def call_on_summary(self, summary, training=None):
        return self.fc(self.head_dropout(self._pooled_features(summary), training=training))

    def _pooled_features(self, summary):
        if self.pooling == "frame":
            return summary["frame_features"]
        if self.pooling == "cls":
            cls = mix_layers(l2_normalize(summary["cls_tokens"]), self.gate())  # B, D
            middle = ops.matmul(cls, ops.transpose(ops.cast(self.normalized_prototypes(), cls.dtype)))
        else:
            middle = summary["mean"]
        return self._stack([summary["min"], middle, summary["max"]])

    def _stack(self, pooled):
        """`[min, middle, max]`, each `(B, [T,] P)` -> `(B, [T,] 3 * P)`, index `3 * p + k`."""
        stacked = ops.stack(pooled, axis=-1)  # B, [T,] P, 3
        if self.pooling == "frame":
            return ops.reshape(stacked, (-1, stacked.shape[1], 3 * self.num_prototypes))
        return ops.reshape(stacked, (-1, 3 * self.num_prototypes))

    def call(self, features, training=None):
        return self.fc(self.head_dropout(self.similarity_features(features), training=training))


@keras.saving.register_keras_serializable(package="keras_bat")
class ProtoBin(_PrototypeHead):
    """Binarised prototypes on the last layer.

    Prototypes are binarised to +-1 (sign, with a straight-through gradient),
    L2-normalised, and compared by cosine similarity with the last layer's
    patch tokens; the maximum over patches (`pooling="max"`) or over
    frequency per time patch (`"frame"`) feeds a linear layer.

    Args:
        num_classes: int, number of outputs.
        num_prototypes: int, learned prototypes. Defaults to `10000`.
        pooling: `"max"` or `"frame"`. Defaults to `"max"`.
        dropout: float, dropout on the similarities. Defaults to `0.2`.
    """

    @classmethod
    def from_settings(cls, num_classes, task, backbone, num_prototypes=10000, dropout=0.2, **settings):
        return cls(num_classes, num_prototypes, pooling="frame" if task == "frame" else "max", dropout=dropout)

    def __init__(self, num_classes, num_prototypes=10000, pooling="max", dropout=0.2, **kwargs):
        check_pooling(pooling, ("max", "frame"), head="ProtoBin")
        super().__init__(num_classes, num_prototypes, pooling, dropout, **kwargs)

    def normalized_prototypes(self):
        signs = ops.where(self.prototypes >= 0, 1.0, -1.0)
        # Straight-through: the forward pass sees the signs, gradients the raw values.
        binary = signs + self.prototypes - ops.stop_gradient(self.prototypes)
        return l2_normalize(binary)

    def chunk_summary(self, features):
        """The maximum similarities over the chunk's patches (per time patch for `"frame"`)."""
        check_features(features, "ProtoBin")
        patches = l2_normalize(features["patch_tokens"][:, -1])  # B, T, F, D
        prototypes = ops.cast(self.normalized_prototypes(), patches.dtype)
        similarity = ops.einsum("btfd,pd->btfp", patches, prototypes)
        if self.pooling == "frame":
            return {"max": (ops.max(similarity, axis=2), 1)}  # B, T, P
        return {"max": (ops.max(similarity, axis=(1, 2)), "max")}  # B, P

    def call_on_summary(self, summary, training=None):
        return self.fc(self.head_dropout(summary["max"], training=training))

    def call(self, features, training=None):
        return self.call_on_summary({"max": self.chunk_summary(features)["max"][0]}, training=training)
