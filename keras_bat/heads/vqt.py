"""Visual query tokens (VQT): learned queries read every block of a frozen encoder."""

import math

import keras
from keras import ops

from keras_bat.convert import mapping
from keras_bat.errors import UsageError
from keras_bat.heads.base import HeadContract, check_features, l2_normalize
from keras_bat.layers.base import Layer
from keras_bat.layers.dense import Dense
from keras_bat.layers.transformer import seeded_dropout


@keras.saving.register_keras_serializable(package="keras_bat")
class VQTHead(HeadContract, Layer):
    """Visual query tokens and their linear classifier.

    The head owns `query_tokens` `(depth, num_query_tokens, dim)`; a backbone
    built with `num_query_tokens` reads them (`head.batch_query_tokens(batch)`
    is its `query_tokens` input) before each block, without making them
    keys. The features are the final class token (L2-normalised), then for
    each block its query outputs flattened and L2-normalised; they go through
    an optional LayerNorm, dropout and a linear layer.

    Args:
        num_classes: int, number of outputs.
        depth: int, number of encoder blocks.
        dim: int, token width.
        num_query_tokens: int, query tokens per block. Defaults to `10`.
        patch_size: int, the encoder's patch size (sets the initial range,
            `+-sqrt(6 / (3 * patch_size**2 + dim))`). Defaults to `16`.
        use_norm: bool, LayerNorm on the features. Defaults to `False`.
        dropout: float, dropout before the linear layer. Defaults to `0.0`.

    Call arguments:
        features: the output dict of a backbone with `num_query_tokens`
            (it holds `cls_tokens` and `query_tokens`).

    Returns:
        Logits `(batch, num_classes)`.
    """

    tasks = ("multiclass", "multilabel")
    reads_query_tokens = True

    @classmethod
    def from_settings(cls, num_classes, task, backbone, use_norm=False, dropout=0.0, num_query_tokens=10,
                      **settings):
        return cls(num_classes, backbone.depth, backbone.dim, num_query_tokens, patch_size=backbone.patch_size,
                   use_norm=use_norm, dropout=dropout)

    def __init__(self, num_classes, depth, dim, num_query_tokens=10, patch_size=16, use_norm=False,
                 dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if num_query_tokens < 1:
            raise UsageError(f"`num_query_tokens` must be positive. Received: {num_query_tokens}")
        self.num_classes = num_classes
        self.depth = depth
        self.dim = dim
        self.num_query_tokens = num_query_tokens
        self.patch_size = patch_size
        self.use_norm = use_norm
        self.dropout = dropout
        self.num_features = dim + depth * num_query_tokens * dim
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6, name="ln") if use_norm else None
        self.head_dropout = seeded_dropout(dropout)
        self.fc = Dense(num_classes, name="fc")
        limit = math.sqrt(6.0 / (3 * patch_size * patch_size + dim))
        self.query_tokens = self.add_weight(
            shape=(depth, num_query_tokens, dim),
            initializer=keras.initializers.RandomUniform(-limit, limit), name="query_tokens")

    def build(self, features_shape=None):
        if self.norm is not None:
            self.norm.build((None, self.num_features))
        self.fc.build((None, self.num_features))
        self.built = True

    def batch_query_tokens(self, batch_size):
        """The query tokens broadcast to `(batch_size, depth, num_query_tokens, dim)`."""
        return ops.broadcast_to(self.query_tokens[None], (batch_size,) + tuple(self.query_tokens.shape))

    def chunk_summary(self, features):
        return {name: (features[name], "chunk_mean") for name in ("cls_tokens", "query_tokens")}

    def features(self, features):
        """`[normalised final cls; normalised query outputs per block]` `(batch, num_features)`."""
        check_features(features, "VQTHead", needs=("cls_tokens", "query_tokens"))
        cls = l2_normalize(features["cls_tokens"][:, -1])  # B, D
        queries = features["query_tokens"]  # B, L, Q, D
        if tuple(queries.shape[1:]) != tuple(self.query_tokens.shape):
            raise UsageError(f"VQTHead expects query_tokens of shape (batch,) + {tuple(self.query_tokens.shape)}."
                             f" Received: {tuple(queries.shape)}")
        queries = l2_normalize(ops.reshape(queries, (-1, self.depth, self.num_query_tokens * self.dim)))
        return ops.concatenate([cls, ops.reshape(queries, (-1, self.num_features - self.dim))], axis=-1)

    def call(self, features, training=None):
        x = self.features(features)
        if self.norm is not None:
            x = self.norm(x)
        return self.fc(self.head_dropout(x, training=training))

    def compute_output_shape(self, features_shape):
        return (features_shape["cls_tokens"][0], self.num_classes)

    def official_parameters(self):
        params = {"vqt": mapping.Param(self.query_tokens)}
        if self.norm is not None:  # official: Sequential(LayerNorm, Linear)
            params.update(mapping.layer_norm("head.0", self.norm))
            params.update(mapping.linear("head.1", self.fc))
        else:
            params.update(mapping.linear("head", self.fc))
        return params, {}

    def official_layers_and_dim(self, shape):
        return self.depth, self.dim

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "depth": self.depth, "dim": self.dim,
                       "num_query_tokens": self.num_query_tokens, "patch_size": self.patch_size,
                       "use_norm": self.use_norm, "dropout": self.dropout})
        return config
