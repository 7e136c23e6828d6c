"""The pretraining decoder: kept tokens back on the full grid, then ViT blocks."""

import keras
from keras import ops

from keras_bat.layers.base import Layer
from keras_bat.layers.position import sincos_position_table
from keras_bat.layers.transformer import TransformerBlock


@keras.saving.register_keras_serializable(package="keras_bat")
class MaskedDecoder(Layer):
    """BAT's decoder: mask tokens fill the removed patches, then gated blocks.

    Kept student tokens (projected to `dim` if widths differ) go back to
    their grid positions, a learned mask token fills the rest, trainable
    positions (sine-cosine initialised) are added, post-norm gated blocks run
    over all `N` patches, and a bias-free projection returns to the
    encoder's width.

    Args:
        encoder_dim: int, the student's token width.
        time_patches: int, patch grid height (64 for 1024 frames).
        freq_patches: int, patch grid width (8 for 128 mels).
        dim: int or `None`, decoder width; the encoder's by default.
        depth: int, number of blocks. Defaults to `6`.
        num_heads: int, attention heads. Defaults to `12`.
        mlp_ratio: float, MLP width ratio. Defaults to `4.0`.
        use_gate: bool, gated attention. Defaults to `True`.

    Call arguments:
        kept_tokens: tensor `(batch, num_kept, encoder_dim)`.
        ids_keep: int tensor `(batch, num_kept)`, ascending kept indices.

    Returns:
        Tensor `(batch, time_patches * freq_patches, encoder_dim)`.
    """

    def __init__(self, encoder_dim, time_patches, freq_patches, dim=None, depth=6, num_heads=12,
                 mlp_ratio=4.0, use_gate=True, **kwargs):
        super().__init__(**kwargs)
        self.encoder_dim = encoder_dim
        self.time_patches = time_patches
        self.freq_patches = freq_patches
        self.dim = dim or encoder_dim
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.use_gate = use_gate
        self.num_patches = time_patches * freq_patches
        policy = dict(dtype=self.dtype_policy)
        self.in_proj = (keras.layers.Dense(self.dim, use_bias=False, name="in_proj", **policy)
                        if self.dim != encoder_dim else None)
        self.blocks = [TransformerBlock(self.dim, num_heads, mlp_ratio=mlp_ratio, use_gate=use_gate,
                                        name=f"blocks_{i}", **policy) for i in range(depth)]
        self.out_proj = keras.layers.Dense(encoder_dim, use_bias=False, name="out_proj", **policy)

    def build(self, kept_tokens_shape, ids_keep_shape=None):
        self.mask_token = self.add_weight(shape=(1, 1, self.dim), name="mask_token",
                                          initializer=keras.initializers.RandomNormal(stddev=0.02))
        table = sincos_position_table(self.dim, self.freq_patches, self.time_patches)
        self.pos_embed = self.add_weight(shape=table.shape, name="pos_embed",
                                         initializer=keras.initializers.Constant(table))
        if self.in_proj is not None:
            self.in_proj.build((None, None, self.encoder_dim))
        for block in self.blocks:
            block.build((None, self.num_patches, self.dim))
        self.out_proj.build((None, None, self.dim))
        self.built = True

    def call(self, kept_tokens, ids_keep, training=None):
        x = self.in_proj(kept_tokens) if self.in_proj is not None else kept_tokens
        batch, num_kept = ops.shape(x)[0], x.shape[1]
        # Position p reads kept token j when ids_keep[j] == p, else the mask token (index num_kept).
        ids_keep = ops.cast(ids_keep, "int32")
        kept_flags = ops.sum(ops.one_hot(ids_keep, self.num_patches, dtype="int32"), axis=1)  # B, N
        source = ops.where(kept_flags > 0, ops.cumsum(kept_flags, axis=1) - 1, num_kept)
        pool = ops.concatenate([x, ops.broadcast_to(ops.cast(self.mask_token, x.dtype),
                                                    (batch, 1, self.dim))], axis=1)  # B, n + 1, D
        index = ops.broadcast_to(source[..., None], (batch, self.num_patches, self.dim))
        x = ops.take_along_axis(pool, index, axis=1) + ops.cast(self.pos_embed[None], x.dtype)
        for block in self.blocks:
            x = block(x, training=training)
        return self.out_proj(x)

    def compute_output_shape(self, kept_tokens_shape, ids_keep_shape=None):
        return (kept_tokens_shape[0], self.num_patches, self.encoder_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"encoder_dim": self.encoder_dim, "time_patches": self.time_patches,
                       "freq_patches": self.freq_patches, "dim": self.dim, "depth": self.depth,
                       "num_heads": self.num_heads, "mlp_ratio": self.mlp_ratio, "use_gate": self.use_gate})
        return config
