"""Linear probes: last layer, layer-mixed (softmax gate), and Head2Toe."""

import keras
import numpy as np
from keras import ops

from keras_bat.convert import mapping
from keras_bat.errors import UsageError
from keras_bat.heads.base import (
    HeadContract,
    LayerGateMixin,
    check_features,
    check_pooling,
    logits_shape,
    mix_layers,
    pool_layers,
    pooled_patch_summary,
    task_pooling,
)
from keras_bat.layers.base import Layer
from keras_bat.layers.dense import Dense
from keras_bat.layers.transformer import seeded_dropout


class _LinearProbe(HeadContract, Layer):
    """Pooled tokens -> optional LayerNorm -> dropout -> Dense."""

    @classmethod
    def cache_tokens(cls, pooling, task):
        return "cls" if pooling == "cls" and task != "frame" else "all"

    @classmethod
    def from_settings(cls, num_classes, task, backbone, pooling="cls", use_norm=False, dropout=0.0, **settings):
        return cls(num_classes, pooling=task_pooling(task, pooling), use_norm=use_norm, dropout=dropout)

    def __init__(self, num_classes, pooling="cls", use_norm=False, dropout=0.0,
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.pooling = check_pooling(pooling, head=type(self).__name__)
        self.use_norm = use_norm
        self.dropout = dropout
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6, name="ln") if use_norm else None
        self.head_dropout = seeded_dropout(dropout)
        self.fc = Dense(num_classes, name="fc", kernel_regularizer=kernel_regularizer)

    def pooled_features(self, features):
        raise NotImplementedError

    def feature_dim(self, features_shape):
        raise NotImplementedError

    @property
    def needed_features(self):
        """Class-token probes need only `cls_tokens` (e.g. from a feature cache)."""
        return ("cls_tokens",) if self.pooling == "cls" else ("cls_tokens", "patch_tokens")

    def chunk_summary(self, features):
        return pooled_patch_summary(features, self.pooling)

    def build(self, features_shape):
        check_features(features_shape, type(self).__name__, self.needed_features)
        width = self.feature_dim(features_shape)
        if self.norm is not None:
            self.norm.build((None, width))
        self.fc.build((None, width))
        self.built = True

    def call(self, features, training=None):
        check_features(features, type(self).__name__, self.needed_features)
        x = self.pooled_features(features)
        if self.norm is not None:
            x = self.norm(x)
        return self.fc(self.head_dropout(x, training=training))

    def compute_output_shape(self, features_shape):
        if self.pooling == "cls":
            return (features_shape["cls_tokens"][0], self.num_classes)
        return logits_shape(features_shape, self.pooling, self.num_classes)

    def official_parameters(self):
        params = mapping.linear("fc", self.fc)
        if self.norm is not None:
            params.update(mapping.layer_norm("ln", self.norm))
        if isinstance(self, LayerGateMixin):
            params["block_attention"] = mapping.Param(self.layer_logits)
        return params, {}

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "pooling": self.pooling,
                       "use_norm": self.use_norm, "dropout": self.dropout})
        return config


@keras.saving.register_keras_serializable(package="keras_bat")
class LinearHead(_LinearProbe):
    """Linear probe on the last layer.

    Args:
        num_classes: int, number of outputs.
        pooling: `"cls"` (class token), `"mean"` (patch average) or `"frame"`
            (per time patch, frequency-averaged). Defaults to `"cls"`.
        use_norm: bool, LayerNorm before the linear layer. Defaults to `False`.
        dropout: float, dropout before the linear layer. Defaults to `0.0`.

    Call arguments:
        features: the backbone's output dict.

    Returns:
        Logits `(batch, num_classes)`, or `(batch, time_patches, num_classes)`
        with `pooling="frame"`.
    """

    def pooled_features(self, features):
        return pool_layers(features, self.pooling)[:, -1]

    def feature_dim(self, features_shape):
        return features_shape["cls_tokens"][-1]


@keras.saving.register_keras_serializable(package="keras_bat")
class LayerMixedLinear(LayerGateMixin, _LinearProbe):
    """Linear probe on a softmax-weighted (convex) mix of all layers.

    The layer gate starts uniform; `head.layer_weights` reads it.

    Args:
        num_classes: int, number of outputs.
        pooling: `"cls"`, `"mean"` or `"frame"`. Defaults to `"cls"`.
        use_norm: bool, LayerNorm before the linear layer. Defaults to `False`.
        dropout: float, dropout before the linear layer. Defaults to `0.0`.
    """

    def build(self, features_shape):
        self.add_layer_gate(features_shape["cls_tokens"][1])
        super().build(features_shape)

    def pooled_features(self, features):
        return mix_layers(pool_layers(features, self.pooling), self.gate())

    def feature_dim(self, features_shape):
        return features_shape["cls_tokens"][-1]

    def official_layers_and_dim(self, shape):
        return shape("block_attention")[0], shape("fc.weight")[1]


@keras.saving.register_keras_serializable(package="keras_bat")
class GroupLasso(keras.regularizers.Regularizer):
    """Group-lasso penalty on a Dense kernel `(inputs, outputs)`, as in Head2Toe.

    Element-wise: `sqrt(outputs) * sum_i ||kernel[i, :]||` (each input
    feature is a group). Layer-wise: `sqrt(group_size) * sum_g ||kernel[g] + 1e-8||_F`
    over consecutive groups of `group_size` input rows (one per encoder layer).

    Args:
        weight: float, multiplier of the penalty in the loss.
        group_size: int or `None`, rows per group for the layer-wise penalty;
            `None` for the element-wise penalty.
    """

    def __init__(self, weight=1e-4, group_size=None):
        self.weight = float(weight)
        self.group_size = group_size

    def penalty(self, kernel):
        kernel = ops.cast(kernel, "float32")
        if self.group_size is None:
            scale = float(kernel.shape[1]) ** 0.5
            return scale * ops.sum(ops.sqrt(ops.sum(ops.square(kernel), axis=1)))
        groups = ops.reshape(kernel + 1e-8, (-1, self.group_size * kernel.shape[1]))
        return float(self.group_size) ** 0.5 * ops.sum(ops.sqrt(ops.sum(ops.square(groups), axis=1)))

    def __call__(self, kernel):
        return self.weight * self.penalty(kernel)

    def get_config(self):
        return {"weight": self.weight, "group_size": self.group_size}


@keras.saving.register_keras_serializable(package="keras_bat")
class Head2Toe(_LinearProbe):
    """Head2Toe: a linear probe on all layers concatenated, with a group lasso.

    Features are `[layer 0, ..., layer L-1]` concatenated (layer-major); the
    group-lasso penalty on the linear weights is added to the training loss
    with weight `lasso_weight` (element-wise groups, or one group per layer
    with `layer_wise_lasso=True`).

    Args:
        num_classes: int, number of outputs.
        pooling: `"cls"`, `"mean"` or `"frame"`. Defaults to `"cls"`.
        use_norm: bool, LayerNorm over the concatenation. Defaults to `False`.
        dropout: float, dropout before the linear layer. Defaults to `0.0`.
        lasso_weight: float, weight of the penalty in the loss. Defaults to `1e-4`.
        layer_wise_lasso: bool, one group per layer. Defaults to `False`.
        dim: int or `None`, token width; needed with `layer_wise_lasso`
            (the group size) and taken from the features otherwise.
    """

    def __init__(self, num_classes, pooling="cls", use_norm=False, dropout=0.0, lasso_weight=1e-4,
                 layer_wise_lasso=False, dim=None, **kwargs):
        if layer_wise_lasso and dim is None:
            raise UsageError("Head2Toe(layer_wise_lasso=True) needs `dim`, the size of a layer's group.")
        group_size = dim if layer_wise_lasso else None
        regularizer = GroupLasso(lasso_weight, group_size) if lasso_weight else None
        super().__init__(num_classes, pooling, use_norm, dropout, kernel_regularizer=regularizer, **kwargs)
        self.lasso_weight = lasso_weight
        self.layer_wise_lasso = layer_wise_lasso
        self.dim = dim
        self.lasso = GroupLasso(1.0, group_size)

    @classmethod
    def from_settings(cls, num_classes, task, backbone, pooling="cls", use_norm=False, dropout=0.0,
                      lasso_weight=1e-4, **settings):
        return cls(num_classes, pooling=task_pooling(task, pooling), use_norm=use_norm, dropout=dropout,
                   lasso_weight=lasso_weight)

    def lasso_penalty(self):
        """The unweighted group-lasso penalty of the current weights."""
        return self.lasso.penalty(self.fc.kernel)

    def pooled_features(self, features):
        x = pool_layers(features, self.pooling)  # B, L, D or B, L, T, D
        width = x.shape[1] * x.shape[-1]
        if self.pooling == "frame":
            x = ops.transpose(x, (0, 2, 1, 3))  # B, T, L, D
            return ops.reshape(x, (-1, x.shape[1], width))  # B, T, L * D
        return ops.reshape(x, (-1, width))  # B, L * D

    def feature_dim(self, features_shape):
        _, layers, dim = features_shape["cls_tokens"]
        if self.dim is not None and self.dim != dim:
            raise UsageError(f"Head2Toe was configured with dim={self.dim}, the features have {dim}.")
        return layers * dim

    def official_parameters(self):
        params, constants = super().official_parameters()
        group_size = self.dim if self.layer_wise_lasso else self.num_classes
        return params, {"group_scale": np.float32(np.sqrt(group_size))}

    def official_layers_and_dim(self, shape):
        if self.dim is None:
            raise UsageError("Build the Head2Toe head first (call it on features) or give it `dim`: "
                             "its weights do not tell the number of layers from their width.")
        return shape("fc.weight")[1] // self.dim, self.dim

    def get_config(self):
        config = super().get_config()
        config.update({"lasso_weight": self.lasso_weight, "layer_wise_lasso": self.layer_wise_lasso,
                       "dim": self.dim})
        return config
