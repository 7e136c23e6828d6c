"""The layers of BEATs: a convolutional position embedding, a bucketed relative
position bias with a GRU-style gate, and deep-norm post-norm blocks."""

import math

import keras
import numpy as np
from keras import ops

from keras_bat.errors import UsageError
from keras_bat.layers.base import Layer
from keras_bat.layers.dense import Dense
from keras_bat.ops import gated_attention, gelu


def relative_position_buckets(query_length, key_length, num_buckets=320, max_distance=800):
    """T5-style bidirectional buckets of `key - query` offsets, as BEATs computes
    them (float32 logarithms): int array `(query_length, key_length)`."""
    relative = np.arange(key_length)[None, :] - np.arange(query_length)[:, None]
    half = num_buckets // 2
    buckets = (relative > 0).astype("int64") * half
    distance = np.abs(relative)
    max_exact = half // 2
    # Offsets below max_exact keep their own bucket; the logarithm only serves the others.
    scaled = (np.log(np.maximum(distance, 1).astype("float32") / np.float32(max_exact))
              / np.float32(math.log(max_distance / max_exact)) * np.float32(half - max_exact))
    large = np.minimum(max_exact + scaled.astype("int64"), half - 1)
    return buckets + np.where(distance < max_exact, distance, large)


@keras.saving.register_keras_serializable(package="keras_bat")
class RelativePositionBias(Layer):
    """One learned bias per head and relative-position bucket, shared by all blocks.

    Args:
        num_heads: int, attention heads.
        num_buckets: int, relative-position buckets (half per direction). Defaults to `320`.
        max_distance: int, offsets beyond this share the last bucket. Defaults to `800`.

    Call arguments:
        tokens: tensor `(batch, tokens, dim)` (read for its length).
        num_query_tokens: int, query tokens that will be put in front of
            `tokens`: rows for them too, but no key columns (they are not keys).

    Returns:
        Tensor `(num_heads, num_query_tokens + tokens, tokens)`.
    """

    def __init__(self, num_heads, num_buckets=320, max_distance=800, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.num_buckets = num_buckets
        self.max_distance = max_distance

    def build(self, input_shape=None):
        self.table = self.add_weight(shape=(self.num_buckets, self.num_heads), name="table",
                                     initializer=keras.initializers.RandomNormal(stddev=0.02))
        self.built = True

    def call(self, tokens, num_query_tokens=0):
        length = num_query_tokens + tokens.shape[1]
        buckets = relative_position_buckets(length, length, self.num_buckets, self.max_distance)
        buckets = ops.convert_to_tensor(buckets[:, num_query_tokens:].astype("int32"))
        return ops.transpose(ops.take(self.table, buckets, axis=0), (2, 0, 1))  # H, Q + N, N

    def compute_output_spec(self, tokens, num_query_tokens=0):
        keys = tokens.shape[1]
        rows = None if keys is None else num_query_tokens + keys
        return keras.KerasTensor((self.num_heads, rows, keys), dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"num_heads": self.num_heads, "num_buckets": self.num_buckets,
                       "max_distance": self.max_distance})
        return config


@keras.saving.register_keras_serializable(package="keras_bat")
class ConvPositionEmbedding(Layer):
    """BEATs' position embedding: `GELU(grouped Conv1d(tokens))` over the token
    sequence, with a weight-normalised kernel (`g * v / ||v||`, the norm per
    kernel tap) and "same" padding (for an even kernel the last output is
    dropped). Returns the embedding; the caller adds it to the tokens.

    Args:
        dim: int, token width.
        kernel_size: int, kernel width in tokens. Defaults to `128`.
        groups: int, convolution groups (`dim` must divide evenly). Defaults to `16`.
    """

    def __init__(self, dim, kernel_size=128, groups=16, **kwargs):
        super().__init__(**kwargs)
        if dim % groups:
            raise UsageError(f"`dim` must be divisible by `groups`. Received: dim={dim}, groups={groups}")
        self.dim = dim
        self.kernel_size = kernel_size
        self.groups = groups

    def build(self, input_shape=None):
        # The official layout: v (out, in / groups, taps), g (1, 1, taps).
        self.weight_v = self.add_weight(shape=(self.dim, self.dim // self.groups, self.kernel_size),
                                        initializer="he_normal", name="weight_v")
        self.weight_g = self.add_weight(shape=(1, 1, self.kernel_size), initializer="ones", name="weight_g")
        self.bias = self.add_weight(shape=(self.dim,), initializer="zeros", name="bias")
        self.built = True

    def call(self, tokens):
        v = ops.cast(self.weight_v, tokens.dtype)
        norm = ops.sqrt(ops.sum(ops.square(v), axis=(0, 1), keepdims=True))
        kernel = ops.transpose(ops.cast(self.weight_g, tokens.dtype) * v / norm, (2, 1, 0))  # taps, in / G, out
        half = self.kernel_size // 2
        padded = ops.pad(tokens, [[0, 0], [half, half], [0, 0]])
        width = self.dim // self.groups
        out = ops.concatenate([
            ops.conv(padded[..., g * width:(g + 1) * width], kernel[..., g * width:(g + 1) * width])
            for g in range(self.groups)], axis=-1)  # B, N (+ 1 for an even kernel), D
        out = out[:, : tokens.shape[1]]
        return gelu(out + ops.cast(self.bias, out.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"dim": self.dim, "kernel_size": self.kernel_size, "groups": self.groups})
        return config


@keras.saving.register_keras_serializable(package="keras_bat")
class BEATsAttention(Layer):
    """BEATs' self-attention: separate q/k/v projections and a relative position
    bias scaled per query by a GRU-style gate of that query.

    `bias = (a * (b * grep_a - 1) + 2) * position_bias`, where `a, b` are
    sigmoids of `grep_linear(q)` summed in two groups of four.

    Args:
        dim: int, token width.
        num_heads: int, attention heads.
        use_kernels: `None`, `True` or `False`, see `keras_bat.ops.gated_attention`
            (the bias keeps BEATs on the keras.ops path).

    Call arguments:
        tokens: tensor `(batch, tokens, dim)`.
        position_bias: tensor `(num_heads, tokens, keys)` from `RelativePositionBias`.
        key_mask: optional boolean tensor `(batch, tokens)`.
        key_offset: int, the first `key_offset` tokens are queries only.
        key_lengths: optional int tensor `(batch,)`, the padding as lengths.
    """

    lora_targets = ("q_proj", "k_proj", "v_proj", "out_proj")  # the projections `EncoderModel.enable_lora` adapts

    def __init__(self, dim, num_heads, use_kernels=None, **kwargs):
        super().__init__(**kwargs)
        if dim % num_heads:
            raise UsageError(f"`dim` must be divisible by `num_heads`. Received: dim={dim}, num_heads={num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.use_kernels = use_kernels
        dense = dict(dtype=self.dtype_policy)
        self.q_proj = Dense(dim, name="q_proj", **dense)
        self.k_proj = Dense(dim, name="k_proj", **dense)
        self.v_proj = Dense(dim, name="v_proj", **dense)
        self.out_proj = Dense(dim, name="out_proj", **dense)
        self.grep_linear = Dense(8, name="grep_linear", **dense)

    def build(self, input_shape):
        for dense in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            dense.build(input_shape)
        self.grep_linear.build((None, self.head_dim))
        self.grep_a = self.add_weight(shape=(1, self.num_heads, 1, 1), initializer="ones", name="grep_a")
        self.built = True

    def call(self, tokens, position_bias, key_mask=None, key_offset=0, key_lengths=None):
        n = tokens.shape[1]
        heads = (-1, n, self.num_heads, self.head_dim)
        query = ops.reshape(self.q_proj(tokens), heads)  # B, N, H, Dh
        key = ops.reshape(self.k_proj(tokens), heads)
        value = ops.reshape(self.v_proj(tokens), heads)
        gates = ops.reshape(self.grep_linear(query), (-1, n, self.num_heads, 2, 4))
        gates = ops.sigmoid(ops.sum(gates, axis=-1))  # B, N, H, 2
        grep_a = ops.reshape(ops.cast(self.grep_a, gates.dtype), (1, 1, self.num_heads))
        scale = gates[..., 0] * (gates[..., 1] * grep_a - 1.0) + 2.0  # B, N, H
        bias = ops.transpose(scale, (0, 2, 1))[..., None] * ops.cast(position_bias, scale.dtype)[None]  # B, H, N, S
        out = gated_attention(query, key, value, key_mask=key_mask, key_offset=key_offset, bias=bias,
                              use_kernels=self.use_kernels, key_lengths=key_lengths)
        return self.out_proj(ops.reshape(out, (-1, n, self.dim)))

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"dim": self.dim, "num_heads": self.num_heads, "use_kernels": self.use_kernels})
        return config


@keras.saving.register_keras_serializable(package="keras_bat")
class BEATsBlock(Layer):
    """A BEATs encoder layer: post-norm with deep norm (each residual scaled by
    `deep_norm_alpha`), attention then a GELU feed-forward network.

    Args:
        dim: int, token width.
        num_heads: int, attention heads.
        ffn_dim: int, feed-forward width.
        deep_norm_alpha: float, residual scale, `(2 * depth) ** 0.25` in BEATs.
        layer_norm_epsilon: float. Defaults to `1e-5`.
        use_kernels: see `BEATsAttention`.
    """

    def __init__(self, dim, num_heads, ffn_dim, deep_norm_alpha=1.0, layer_norm_epsilon=1e-5, use_kernels=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.num_heads = num_heads
        self.ffn_dim = ffn_dim
        self.deep_norm_alpha = deep_norm_alpha
        self.layer_norm_epsilon = layer_norm_epsilon
        self.use_kernels = use_kernels
        dense = dict(dtype=self.dtype_policy)
        self.self_attn = BEATsAttention(dim, num_heads, use_kernels=use_kernels, name="self_attn", **dense)
        self.self_attn_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="self_attn_layer_norm", **dense)
        self.fc1 = Dense(ffn_dim, name="fc1", **dense)
        self.fc2 = Dense(dim, name="fc2", **dense)
        self.final_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="final_layer_norm", **dense)

    def build(self, input_shape):
        self.self_attn.build(input_shape)
        self.self_attn_layer_norm.build(input_shape)
        self.fc1.build(input_shape)
        self.fc2.build(tuple(input_shape[:-1]) + (self.ffn_dim,))
        self.final_layer_norm.build(input_shape)
        self.built = True

    def call(self, tokens, position_bias, key_mask=None, key_offset=0, key_lengths=None):
        alpha = self.deep_norm_alpha
        attended = self.self_attn(tokens, position_bias, key_mask=key_mask, key_offset=key_offset,
                                  key_lengths=key_lengths)
        x = self.self_attn_layer_norm(tokens * alpha + attended)
        return self.final_layer_norm(x * alpha + self.fc2(gelu(self.fc1(x))))

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"dim": self.dim, "num_heads": self.num_heads, "ffn_dim": self.ffn_dim,
                       "deep_norm_alpha": self.deep_norm_alpha, "layer_norm_epsilon": self.layer_norm_epsilon,
                       "use_kernels": self.use_kernels})
        return config
