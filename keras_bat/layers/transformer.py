"""Gated self-attention and the BAT transformer block."""

import random

import keras
from keras import ops

from keras_bat.errors import UsageError
from keras_bat.layers.base import Layer
from keras_bat.layers.dense import Dense
from keras_bat.ops import gated_attention, gelu
from keras_bat.ops.random import draw_rows


def seeded_dropout(rate, **kwargs):
    """`SeededDropout` with an explicit seed (drawn from Python's generator, which
    `keras.utils.set_random_seed` seeds), so that its masks come from the layer's seed
    state on every backend, a variable that training backups save. Unseeded, the torch
    backend draws them from torch's global generator, which data loaders also draw from."""
    return SeededDropout(rate, seed=random.randint(1, 2**31 - 1), **kwargs)


@keras.saving.register_keras_serializable(package="keras_bat")
class SeededDropout(keras.layers.Dropout):
    """`keras.layers.Dropout` (without `noise_shape`) whose masks do not depend on how a batch
    is split over tf.distribute replicas (`draw_rows`)."""

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        shape = tuple(ops.shape(inputs))
        draw = draw_rows(lambda rows: keras.random.uniform((rows, *shape[1:]), seed=self.seed_generator,
                                                           dtype=inputs.dtype), shape[0])
        return ops.where(draw >= self.rate, inputs / (1.0 - self.rate), ops.zeros_like(inputs))


@keras.saving.register_keras_serializable(package="keras_bat")
class DropPath(Layer):
    """Stochastic depth: drops a whole residual branch per example in training.

    Args:
        rate: float, probability of dropping the branch. Defaults to `0.0`.
        seed: int or `None`, seed of the layer's random generator.
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise UsageError(f"`rate` must be in [0, 1). Received: {rate!r}")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if rate > 0 else None
        self.built = True  # no weights: built now, even where a block's symbolic call never reaches it

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        keep = 1.0 - self.rate
        ones = (1,) * (len(inputs.shape) - 1)
        draw = draw_rows(lambda rows: keras.random.uniform((rows, *ones), seed=self.seed_generator,
                                                           dtype=inputs.dtype), ops.shape(inputs)[0])
        return inputs * ops.cast(draw < keep, inputs.dtype) / keep

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package="keras_bat")
class GatedSelfAttention(Layer):
    """Multi-head self-attention whose output is gated by `sigmoid(W_g x + b_g)`.

    `out = proj(softmax(q k^T / sqrt(d)) v * sigmoid(gate(x)))`, BAT's attention.

    Args:
        dim: int, token width.
        num_heads: int, number of heads (`dim` must divide evenly).
        use_gate: bool, apply the sigmoid output gate. Defaults to `True`.
        qkv_bias: bool, bias in the query/key/value projection. Defaults to `True`.
        dropout: float, dropout after the output projection. Defaults to `0.0`.
        use_kernels: `None`, `True` or `False`, see `keras_bat.ops.gated_attention`.

    Call arguments:
        tokens: tensor `(batch, tokens, dim)`.
        key_mask: optional boolean tensor `(batch, tokens)`; `False` tokens are
            not attended to (their own outputs are still computed).
        key_lengths: optional int tensor `(batch,)`, the same padding as
            lengths (tokens at index `>= key_lengths[b]` are not attended to);
            the encoders pass these, computed once per forward pass.
        key_offset: int, the first `key_offset` tokens are queries only (not
            keys), as for visual query tokens. Defaults to `0`.
    """

    lora_targets = ("qkv", "proj")  # the projections `EncoderModel.enable_lora` adapts

    def __init__(self, dim, num_heads, use_gate=True, qkv_bias=True, dropout=0.0,
                 use_kernels=None, **kwargs):
        super().__init__(**kwargs)
        if dim % num_heads:
            raise UsageError(
                f"`dim` must be divisible by `num_heads`. Received: dim={dim}, num_heads={num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.use_gate = use_gate
        self.qkv_bias = qkv_bias
        self.dropout = dropout
        self.use_kernels = use_kernels
        dense = dict(dtype=self.dtype_policy)
        self.qkv = Dense(3 * dim, use_bias=qkv_bias, name="qkv", **dense)
        self.gate = Dense(dim, name="gate", **dense) if use_gate else None
        self.proj = Dense(dim, name="proj", **dense)
        self.proj_dropout = seeded_dropout(dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.qkv.build(input_shape)
        if self.gate is not None:
            self.gate.build(input_shape)
        self.proj.build(input_shape)
        self.built = True

    def call(self, tokens, key_mask=None, key_offset=0, training=None, key_lengths=None):
        num_tokens = ops.shape(tokens)[1]
        heads = (self.num_heads, self.head_dim)
        qkv = ops.reshape(self.qkv(tokens), (-1, num_tokens, 3) + heads)  # B, N, 3, H, Dh
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # B, N, H, Dh each
        gate = None
        if self.gate is not None:
            gate = ops.reshape(self.gate(tokens), (-1, num_tokens) + heads)
        out = gated_attention(query, key, value, gate=gate, key_mask=key_mask, key_offset=key_offset,
                              use_kernels=self.use_kernels, key_lengths=key_lengths)
        out = ops.reshape(out, (-1, num_tokens, self.dim))
        return self.proj_dropout(self.proj(out), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "dim": self.dim, "num_heads": self.num_heads, "use_gate": self.use_gate,
            "qkv_bias": self.qkv_bias, "dropout": self.dropout, "use_kernels": self.use_kernels,
        })
        return config


@keras.saving.register_keras_serializable(package="keras_bat")
class TransformerBlock(Layer):
    """BAT's transformer block: gated attention and a GELU MLP, post-norm by default.

    Post-norm (BAT): `x = LN1(x + attn(x)); x = LN2(x + mlp(x))`.
    Pre-norm (`norm_first=True`): `x = x + attn(LN1(x)); x = x + mlp(LN2(x))`.

    Args:
        dim: int, token width.
        num_heads: int, number of attention heads.
        mlp_ratio: float, MLP hidden width as a multiple of `dim`. Defaults to `4.0`.
        use_gate: bool, sigmoid-gated attention. Defaults to `True`.
        qkv_bias: bool, bias in the query/key/value projection. Defaults to `True`.
        dropout: float, dropout after the attention and MLP projections.
        drop_path: float, stochastic-depth rate of both residual branches.
        norm_first: bool, pre-norm instead of BAT's post-norm. Defaults to `False`.
        layer_norm_epsilon: float, LayerNorm epsilon. Defaults to `1e-6`.
        use_kernels: `None`, `True` or `False`, see `keras_bat.ops.gated_attention`.

    Call arguments:
        tokens: tensor `(batch, tokens, dim)`.
        key_mask: optional boolean tensor `(batch, tokens)`, see `GatedSelfAttention`.
        key_lengths: optional int tensor `(batch,)`, see `GatedSelfAttention`.
        key_offset: int, leading tokens that are queries only. Defaults to `0`.
    """

    def __init__(self, dim, num_heads, mlp_ratio=4.0, use_gate=True, qkv_bias=True,
                 dropout=0.0, drop_path=0.0, norm_first=False, layer_norm_epsilon=1e-6,
                 use_kernels=None, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.use_gate = use_gate
        self.qkv_bias = qkv_bias
        self.dropout = dropout
        self.drop_path = drop_path
        self.norm_first = norm_first
        self.layer_norm_epsilon = layer_norm_epsilon
        self.use_kernels = use_kernels
        policy = dict(dtype=self.dtype_policy)
        self.attn = GatedSelfAttention(dim, num_heads, use_gate=use_gate, qkv_bias=qkv_bias,
                                       dropout=dropout, use_kernels=use_kernels, name="attn", **policy)
        self.norm1 = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="norm1", **policy)
        self.norm2 = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="norm2", **policy)
        self.fc1 = Dense(int(dim * mlp_ratio), name="fc1", **policy)
        self.fc2 = Dense(dim, name="fc2", **policy)
        self.mlp_dropout = seeded_dropout(dropout, **policy)
        self.drop_path_layer = DropPath(drop_path, **policy)

    def build(self, input_shape):
        for layer in (self.attn, self.norm1, self.norm2, self.fc1):
            layer.build(input_shape)
        self.fc2.build(tuple(input_shape[:-1]) + (int(self.dim * self.mlp_ratio),))
        self.built = True

    def _mlp(self, tokens, training):
        hidden = gelu(self.fc1(tokens))
        hidden = self.mlp_dropout(hidden, training=training)
        return self.mlp_dropout(self.fc2(hidden), training=training)

    def call(self, tokens, key_mask=None, key_offset=0, training=None, key_lengths=None):
        def attend(x):
            x = self.attn(x, key_mask=key_mask, key_offset=key_offset, training=training, key_lengths=key_lengths)
            return self.drop_path_layer(x, training=training)

        def feed_forward(x):
            return self.drop_path_layer(self._mlp(x, training), training=training)

        if self.norm_first:
            tokens = tokens + attend(self.norm1(tokens))
            return tokens + feed_forward(self.norm2(tokens))
        tokens = self.norm1(tokens + attend(tokens))
        return self.norm2(tokens + feed_forward(tokens))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "dim": self.dim, "num_heads": self.num_heads, "mlp_ratio": self.mlp_ratio,
            "use_gate": self.use_gate, "qkv_bias": self.qkv_bias, "dropout": self.dropout,
            "drop_path": self.drop_path, "norm_first": self.norm_first,
            "layer_norm_epsilon": self.layer_norm_epsilon, "use_kernels": self.use_kernels,
        })
        return config
