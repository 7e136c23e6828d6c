"""BEATsBackbone: the BEATs encoder as a functional Keras model, with BATBackbone's outputs."""

import functools

import keras
from keras import ops

from keras_bat.models.beats.beats_convert import beats_checkpoint_config, beats_parameters, load_beats_weights
from keras_bat.errors import UsageError
from keras_bat.layers.base import Layer
from keras_bat.layers.patching import ChunkTokens, MergeChunks, PatchEmbedding
from keras_bat.models.backbone import EncoderModel, encoder_inputs, run_blocks
from keras_bat.models.beats.beats_layers import BEATsBlock, ConvPositionEmbedding, RelativePositionBias


@keras.saving.register_keras_serializable(package="keras_bat")
class MeanToken(Layer):
    """Puts the mean of the real tokens in front: BEATs' stand-in for a class token.

    Call arguments:
        tokens: tensor `(batch, tokens, dim)`.
        key_mask: boolean tensor `(batch, tokens)`, true for real tokens.

    Returns:
        Tensor `(batch, 1 + tokens, dim)`.
    """

    def call(self, tokens, key_mask):
        weights = ops.cast(key_mask, tokens.dtype)[..., None]  # B, N, 1
        mean = ops.sum(tokens * weights, axis=1, keepdims=True) / ops.maximum(
            ops.sum(weights, axis=1, keepdims=True), 1.0)
        return ops.concatenate([mean, tokens], axis=1)

    def compute_output_spec(self, tokens, key_mask):
        length = None if tokens.shape[1] is None else tokens.shape[1] + 1
        return keras.KerasTensor((tokens.shape[0], length, tokens.shape[2]), dtype=tokens.dtype)


@keras.saving.register_keras_serializable(package="keras_bat")
class BEATsBackbone(EncoderModel):
    """The BEATs encoder over Kaldi-fbank patches, with `BATBackbone`'s outputs.

    Spectrogram -> 16 x 16 patches (no bias) -> LayerNorm -> projection to
    `dim` -> time chunks of at most `chunk_time_patches` patches, each
    encoded on its own: a convolutional position embedding, LayerNorm, then
    `depth` deep-norm post-norm blocks with a bucketed relative position
    bias (computed once, shared by all blocks, gated per block). BEATs has no
    class token: each block's "class token" is the mean of its patch tokens,
    averaged over chunks, as the official BAT code uses it.

    Args:
        dim: int, token width. Defaults to `768`.
        depth: int, number of blocks. Defaults to `12`.
        num_heads: int, attention heads. Defaults to `12`.
        ffn_dim: int, feed-forward width. Defaults to `3072`.
        embed_dim: int, patch-embedding width before the projection. Defaults to `512`.
        patch_size: int, patch side in frames and mel bins. Defaults to `16`.
        num_mels: int, mel bins of the input. Defaults to `128`.
        chunk_time_patches: int, time patches per chunk. Defaults to `64`.
        conv_pos: int, kernel width of the position convolution. Defaults to `128`.
        conv_pos_groups: int, its groups. Defaults to `16`.
        num_buckets: int, relative-position buckets. Defaults to `320`.
        max_distance: int, relative-position distance of the last bucket. Defaults to `800`.
        num_query_tokens: int, visual query tokens read before each block
            (an input `query_tokens` `(batch, depth, num_query_tokens, dim)`);
            they are queries, not keys. Defaults to `0`.
        use_padding_mask: bool, take a second input `padding_mask` `(batch,
            frames)` (true for real frames). Defaults to `False`.
        layer_norm_epsilon: float. Defaults to `1e-5`.
        use_kernels: `None`, `True` or `False`. BEATs' attention adds a
            relative position bias, which the fused kernel does not take: it
            runs on the keras.ops path (`True` raises). Defaults to `None`.
        dtype: dtype policy of the layers, e.g. `"mixed_bfloat16"`.

    Inputs:
        A spectrogram `(batch, frames, num_mels)` (`KaldiFbank.for_encoder
        ("beats")`, see `make_frontend`); with `use_padding_mask` or
        `num_query_tokens`, a dict `{"spectrogram", "padding_mask", "query_tokens"}`.

    Outputs:
        Dict with `cls_tokens` `(batch, depth, dim)`, `patch_tokens` `(batch,
        depth, frames // patch_size, num_mels // patch_size, dim)` and, with
        query tokens, `query_tokens` `(batch, depth, num_query_tokens, dim)`.
    """

    frontend = "beats"

    def __init__(self, dim=768, depth=12, num_heads=12, ffn_dim=3072, embed_dim=512, patch_size=16,
                 num_mels=128, chunk_time_patches=64, conv_pos=128, conv_pos_groups=16, num_buckets=320,
                 max_distance=800, num_query_tokens=0, use_padding_mask=False, layer_norm_epsilon=1e-5,
                 use_kernels=None, dtype=None, **kwargs):
        if depth < 1:
            raise UsageError(f"`depth` must be at least 1. Received: {depth}")
        # === Layers ===
        freq_patches = num_mels // patch_size
        patch_embed = PatchEmbedding(embed_dim, patch_size, num_mels, use_bias=False, dtype=dtype,
                                     name="patch_embed")
        layer_norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype, name="layer_norm")
        post_extract_proj = keras.layers.Dense(dim, dtype=dtype, name="post_extract_proj")
        chunk_tokens = ChunkTokens(dim, freq_patches, chunk_time_patches, patch_size, class_token=False,
                                   dtype=dtype, name="chunk_tokens")
        pos_conv = ConvPositionEmbedding(dim, conv_pos, conv_pos_groups, dtype=dtype, name="pos_conv")
        encoder_norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype,
                                                       name="encoder_layer_norm")
        relative_bias = RelativePositionBias(num_heads, num_buckets, max_distance, dtype=dtype,
                                             name="relative_attention_bias")
        alpha = (2.0 * depth) ** 0.25
        blocks = [BEATsBlock(dim, num_heads, ffn_dim, deep_norm_alpha=alpha, layer_norm_epsilon=layer_norm_epsilon,
                             use_kernels=use_kernels, dtype=dtype, name=f"blocks_{i}") for i in range(depth)]
        mean_token = MeanToken(dtype=dtype, name="mean_token")
        merge_chunks = MergeChunks(dtype=dtype, name="merge_chunks")

        # === Functional model ===
        inputs, spectrogram, padding_mask, query_tokens = encoder_inputs(
            num_mels, depth, dim, use_padding_mask, num_query_tokens)
        patch_grid = post_extract_proj(layer_norm(patch_embed(spectrogram)))  # B, T, F, D
        chunks = chunk_tokens(patch_grid, padding_mask)
        key_mask = chunks["key_mask"]
        # Padded tokens are zeros for the convolution, as beyond the end of a real sequence.
        x = chunks["tokens"] * ops.cast(key_mask, chunks["tokens"].dtype)[..., None]
        x = encoder_norm(x + pos_conv(x))
        position_bias = relative_bias(x, num_query_tokens=num_query_tokens)  # H, Q + N, N: computed once, shared
        block_outputs, query_outputs = run_blocks(blocks, x, chunks["key_lengths"], chunks["chunk_weights"],
                                                  query_tokens, dtype, position_bias=position_bias)
        block_outputs = [mean_token(tokens, key_mask) for tokens in block_outputs]
        outputs = merge_chunks(block_outputs, patch_grid, chunks["chunk_weights"], query_outputs)
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)
        self.patch_embed = patch_embed
        self.extract_norm = layer_norm
        self.post_extract_proj = post_extract_proj
        self.chunk_tokens = chunk_tokens
        self.pos_conv = pos_conv
        self.encoder_norm = encoder_norm
        self.relative_bias = relative_bias
        self.blocks = blocks

        # === Config ===
        self.dim = dim
        self.depth = depth
        self.num_heads = num_heads
        self.ffn_dim = ffn_dim
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.num_mels = num_mels
        self.chunk_time_patches = chunk_time_patches
        self.conv_pos = conv_pos
        self.conv_pos_groups = conv_pos_groups
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.num_query_tokens = num_query_tokens
        self.use_padding_mask = use_padding_mask
        self.layer_norm_epsilon = layer_norm_epsilon
        self.use_kernels = use_kernels

    frontend = "beats"  # the registered frontend it reads (see `make_frontend`)

    @classmethod
    def recognise_checkpoint(cls, state):
        """A BEATs encoder (official names), read off the weights."""
        found = beats_checkpoint_config(state)
        if found is None:
            return None
        config, prefix = found
        return config, functools.partial(load_beats_weights, prefix=prefix)

    @classmethod
    def arguments_for_checkpoint(cls, state, config):
        """Constructor arguments a checkpoint dictates beyond `config`: none for BEATs."""
        return {}

    def get_config(self):
        return {
            "name": self.name, "trainable": self.trainable,
            "dim": self.dim, "depth": self.depth, "num_heads": self.num_heads, "ffn_dim": self.ffn_dim,
            "embed_dim": self.embed_dim, "patch_size": self.patch_size, "num_mels": self.num_mels,
            "chunk_time_patches": self.chunk_time_patches, "conv_pos": self.conv_pos,
            "conv_pos_groups": self.conv_pos_groups, "num_buckets": self.num_buckets,
            "max_distance": self.max_distance, "num_query_tokens": self.num_query_tokens,
            "use_padding_mask": self.use_padding_mask, "layer_norm_epsilon": self.layer_norm_epsilon,
            "use_kernels": self.use_kernels, "dtype": self.dtype_config(),
        }

    def official_parameters(self):
        """`official name -> Param` of every variable (see `keras_bat.convert`)."""
        return beats_parameters(self)
