"""BATBackbone: the BAT ViT encoder as a functional Keras model."""

import functools

import keras
from keras import ops

from keras_bat.models.bat.bat_convert import (backbone_parameters, bat_checkpoint_config, checkpoint_time_patches,
                                   load_official_weights)
from keras_bat.models.bat.eat_convert import eat_checkpoint_config, load_eat_weights
from keras_bat.errors import UsageError
from keras_bat.layers.frontend import FRONTENDS
from keras_bat.layers.patching import ChunkTokens, MergeChunks, PatchEmbedding
from keras_bat.layers.transformer import TransformerBlock
from keras_bat.models.backbone import EncoderModel, encoder_inputs, run_blocks


@keras.saving.register_keras_serializable(package="keras_bat")
class BATBackbone(EncoderModel):
    """The BAT encoder: a ViT over log-mel spectrogram patches.

    Spectrogram -> 16 x 16 patches (time-major) -> time chunks of at most
    `chunk_time_patches` patches, each with sine-cosine positions and a class
    token -> LayerNorm -> `depth` gated-attention blocks. Every block's output
    is returned: class tokens averaged over chunks, patch tokens put back on
    the `(time, frequency)` patch grid.

    Args:
        dim: int, token width. Defaults to `768`.
        depth: int, number of transformer blocks. Defaults to `12`.
        num_heads: int, attention heads. Defaults to `12`.
        mlp_ratio: float, MLP width as a multiple of `dim`. Defaults to `4.0`.
        patch_size: int, patch side in frames and mel bins. Defaults to `16`.
        num_mels: int, mel bins of the input. Defaults to `128`.
        chunk_time_patches: int, time patches per chunk (64 = 10.24 s at a
            10 ms hop). It also fixes the sine-cosine table: the one of the
            `(freq_patches, chunk_time_patches)` grid, as the official code
            builds it. A backbone pretrained on shorter clips keeps the table
            of its pretraining grid (16 for 2.56 s, see `BATPretrainer`) and
            encodes longer inputs in chunks of that length; tables are never
            mixed. Defaults to `64`.
        use_gate: bool, sigmoid-gated attention (BAT); `False` for EAT/SSLAM.
            Defaults to `True`.
        qkv_bias: bool, bias in the query/key/value projection. Defaults to `True`.
        pre_norm: bool, LayerNorm over `[cls; patches]` before the first block.
            Defaults to `True`.
        norm_first: bool, pre-norm blocks instead of BAT's post-norm ones.
            Defaults to `False`.
        dropout: float, dropout after attention and MLP projections. Defaults to `0.0`.
        drop_path_rate: float, stochastic depth, rising linearly from 0 in the
            first block to this value in the last. Defaults to `0.0`.
        layer_norm_epsilon: float, LayerNorm epsilon. Defaults to `1e-6`.
        use_padding_mask: bool, take a second input `padding_mask`
            `(batch, frames)` (true for real frames); padded time patches are
            excluded from the attention keys. Defaults to `False`.
        use_kernels: `None`, `True` or `False`: the fused attention kernel
            switch, see `keras_bat.ops.gated_attention`. Defaults to `None`.
        frontend: str, the registered frontend the encoder was trained with
            (`keras_bat.layers.FRONTENDS`): `"log_mel"` (BAT,
            `LogMelSpectrogram`), or `"eat"` / `"sslam"` (the legacy
            `KaldiFbank` of those checkpoints); see `make_frontend`.
            Defaults to `"log_mel"`.
        dtype: dtype policy of the layers, e.g. `"mixed_bfloat16"`.

    Inputs:
        A spectrogram `(batch, frames, num_mels)` with `frames` a multiple of
        `patch_size`; with `use_padding_mask` or `num_query_tokens`, a dict
        `{"spectrogram": ..., "padding_mask": ..., "query_tokens": ...}`.

    Outputs:
        Dict with `cls_tokens` `(batch, depth, dim)` and `patch_tokens`
        `(batch, depth, frames // patch_size, num_mels // patch_size, dim)`.

    Example:
    >>> backbone = BATBackbone(dim=64, depth=2, num_heads=4)
    >>> features = backbone(np.zeros((2, 256, 128), "float32"))
    >>> features["patch_tokens"].shape
    (2, 2, 16, 8, 64)
    """

    padding_is_exact = True  # patches meet only in attention, whose masked keys count for nothing

    def __init__(self, dim=768, depth=12, num_heads=12, mlp_ratio=4.0, patch_size=16,
                 num_mels=128, chunk_time_patches=64, use_gate=True, qkv_bias=True,
                 pre_norm=True, norm_first=False, dropout=0.0, drop_path_rate=0.0,
                 layer_norm_epsilon=1e-6, use_padding_mask=False, num_query_tokens=0,
                 use_kernels=None, frontend="log_mel", dtype=None, **kwargs):
        if depth < 1:
            raise UsageError(f"`depth` must be at least 1. Received: {depth}")
        if frontend not in FRONTENDS:
            raise UsageError(f"`frontend` must be one of {sorted(FRONTENDS)}. Received: {frontend!r}")
        # === Layers ===
        freq_patches = num_mels // patch_size
        patch_embed = PatchEmbedding(dim, patch_size, num_mels, dtype=dtype, name="patch_embed")
        chunk_tokens = ChunkTokens(dim, freq_patches, chunk_time_patches, patch_size,
                                   dtype=dtype, name="chunk_tokens")
        norm = None
        if pre_norm:
            norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype,
                                                   name="pre_norm")
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        blocks = [
            TransformerBlock(dim, num_heads, mlp_ratio=mlp_ratio, use_gate=use_gate,
                             qkv_bias=qkv_bias, dropout=dropout, drop_path=rates[i],
                             norm_first=norm_first, layer_norm_epsilon=layer_norm_epsilon,
                             use_kernels=use_kernels, dtype=dtype, name=f"blocks_{i}")
            for i in range(depth)
        ]
        merge_chunks = MergeChunks(dtype=dtype, name="merge_chunks")

        # === Functional model ===
        inputs, spectrogram, padding_mask, query_tokens = encoder_inputs(
            num_mels, depth, dim, use_padding_mask, num_query_tokens)
        patch_grid = patch_embed(spectrogram)
        chunks = chunk_tokens(patch_grid, padding_mask)
        x = chunks["tokens"]
        if norm is not None:
            x = norm(x)
        block_outputs, query_outputs = run_blocks(blocks, x, chunks["key_lengths"], chunks["chunk_weights"],
                                                  query_tokens, dtype)
        outputs = merge_chunks(block_outputs, patch_grid, chunks["chunk_weights"], query_outputs)
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)
        self.patch_embed = patch_embed
        self.chunk_tokens = chunk_tokens
        self.pre_norm = norm
        self.blocks = blocks
        self.merge_chunks = merge_chunks

        # === Config ===
        self.dim = dim
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.patch_size = patch_size
        self.num_mels = num_mels
        self.chunk_time_patches = chunk_time_patches
        self.use_gate = use_gate
        self.qkv_bias = qkv_bias
        self.use_pre_norm = pre_norm
        self.norm_first = norm_first
        self.dropout = dropout
        self.drop_path_rate = drop_path_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.use_padding_mask = use_padding_mask
        self.num_query_tokens = num_query_tokens
        self.use_kernels = use_kernels
        self.frontend = frontend

    def get_config(self):
        return {
            "name": self.name, "trainable": self.trainable,
            "dim": self.dim, "depth": self.depth, "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio, "patch_size": self.patch_size,
            "num_mels": self.num_mels, "chunk_time_patches": self.chunk_time_patches,
            "use_gate": self.use_gate, "qkv_bias": self.qkv_bias,
            "pre_norm": self.use_pre_norm, "norm_first": self.norm_first,
            "dropout": self.dropout, "drop_path_rate": self.drop_path_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "use_padding_mask": self.use_padding_mask, "num_query_tokens": self.num_query_tokens,
            "use_kernels": self.use_kernels, "frontend": self.frontend,
            "dtype": self.dtype_config(),
        }

    def official_parameters(self):
        """`official name -> Param` of every variable (see `keras_bat.convert`)."""
        return backbone_parameters(self)

    # --- Presets (see EncoderModel.from_preset) ------------------------------------

    @classmethod
    def recognise_checkpoint(cls, state):
        """A BAT encoder (official names) or an EAT / SSLAM one (fairseq names), read off the weights."""
        for read_config, load in ((bat_checkpoint_config, load_official_weights),
                                  (eat_checkpoint_config, load_eat_weights)):
            found = read_config(state)
            if found is not None:
                config, prefix = found
                return config, functools.partial(load, prefix=prefix)
        return None

    @classmethod
    def arguments_for_checkpoint(cls, state, config):
        """Constructor arguments an official checkpoint dictates beyond `config`:
        the position grid of one pretrained on short clips (`chunk_time_patches`)."""
        freq_patches = config.get("num_mels", 128) // config.get("patch_size", 16)
        time_patches = checkpoint_time_patches(state, freq_patches)
        return {"chunk_time_patches": time_patches} if time_patches else {}

    def encode_kept_patches(self, spectrogram, ids_keep, training=None):
        """Runs the encoder on a subset of patches, as the pretraining student does.

        The spectrogram (at most one chunk long) is patched and given
        positions; only the patches in `ids_keep` follow the class token
        through the blocks.

        Args:
            spectrogram: tensor `(batch, frames, num_mels)`, at most
                `chunk_time_patches * patch_size` frames.
            ids_keep: int tensor `(batch, num_kept)`, ascending time-major
                indices of the kept patches.
            training: bool, dropout and drop-path on or off.

        Returns:
            `(cls, patches)`: the last block's class token `(batch, dim)` and
            kept patch tokens `(batch, num_kept, dim)`.
        """
        tokens = self.chunk_tokens.position_patches(self.patch_embed(spectrogram))  # B, N, D
        index = ops.broadcast_to(ops.cast(ids_keep, "int32")[..., None], tuple(ops.shape(ids_keep)) + (self.dim,))
        kept = ops.take_along_axis(tokens, index, axis=1)  # B, n, D
        x = ops.concatenate([self.chunk_tokens.class_tokens(ops.shape(kept)[0], kept.dtype), kept], axis=1)
        if self.pre_norm is not None:
            x = self.pre_norm(x)
        for block in self.blocks:
            x = block(x, training=training)
        return x[:, 0], x[:, 1:]
