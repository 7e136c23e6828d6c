"""Spectrogram patches, time chunks and the class token.

BAT sees at most `chunk_time_patches` time patches at once (64 = 10.24 s):
longer inputs are cut into chunks along time, each with its own class token
and the same position table, and the chunk outputs are put back together
(class tokens averaged, patch tokens concatenated along time). Here all chunks
of a batch run as one larger batch; a shorter last chunk is zero-padded and
its padding is masked out of the attention keys, which equals running it on
its own.
"""

import keras
from keras import ops

from keras_bat.errors import UsageError
from keras_bat.layers.base import Layer
from keras_bat.layers.position import sincos_position_table


def _static_length(tensor, axis, what):
    length = tensor.shape[axis]
    if length is None:
        raise UsageError(
            f"BAT needs a known number of {what} when it is traced. Received a tensor "
            f"of shape {tuple(tensor.shape)}; pad or crop clips to a fixed number of "
            "frames (e.g. `LogMelSpectrogram(time_frames=...)`)."
        )
    return length


def whole_patch_frames(frames, patch_size):
    """The frames a clip of `frames` frames is padded (with zeros) or cropped to for whole
    patches: padded up, except that a last patch holding one frame alone (the frame a
    centred STFT puts on the clip's final sample) is cropped, as fixed-length frontends crop
    1025 frames of 10.24 s to 1024."""
    return max(1, -(-(frames - 1) // patch_size)) * patch_size


@keras.saving.register_keras_serializable(package="keras_bat")
class PatchEmbedding(Layer):
    """Cuts a spectrogram into non-overlapping square patches and projects them.

    Equal to the reference's strided `Conv2d(1, dim, patch, stride=patch)`,
    computed as one matrix product over flattened `(time, freq)` patches.

    Args:
        dim: int, token width.
        patch_size: int, patch side in frames and mel bins. Defaults to `16`.
        num_mels: int, expected number of mel bins. Defaults to `128`.
        use_bias: bool, add a bias (BAT); BEATs has none. Defaults to `True`.

    Call arguments:
        spectrogram: tensor `(batch, frames, num_mels)`, `frames` a multiple
            of `patch_size`.

    Returns:
        Tensor `(batch, frames // patch_size, num_mels // patch_size, dim)`.
    """

    def __init__(self, dim, patch_size=16, num_mels=128, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        if num_mels % patch_size:
            raise UsageError(
                f"`num_mels` must be a multiple of `patch_size`. Received: num_mels={num_mels}, "
                f"patch_size={patch_size}")
        self.dim = dim
        self.patch_size = patch_size
        self.num_mels = num_mels
        self.use_bias = use_bias
        self.proj = keras.layers.Dense(dim, use_bias=use_bias, name="proj", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.proj.build((None, self.patch_size * self.patch_size))
        self.built = True

    def _check(self, shape):
        if len(shape) != 3:
            raise UsageError(
                f"Expected a spectrogram of shape (batch, frames, {self.num_mels}). "
                f"Received shape: {tuple(shape)}")
        if shape[2] is not None and shape[2] != self.num_mels:
            raise UsageError(
                f"Expected {self.num_mels} mel bins in the last axis. Received shape: {tuple(shape)}")
        if shape[1] is not None and shape[1] % self.patch_size:
            raise UsageError(
                f"The number of frames must be a multiple of the patch size {self.patch_size}. "
                f"Received shape: {tuple(shape)} ({shape[1]} frames); pad or crop the "
                "spectrogram, e.g. with `LogMelSpectrogram(time_frames=...)`.")

    def call(self, spectrogram):
        self._check(spectrogram.shape)
        p = self.patch_size
        frames = _static_length(spectrogram, 1, "frames")
        time_patches, freq_patches = frames // p, self.num_mels // p
        x = ops.reshape(spectrogram, (-1, time_patches, p, freq_patches, p))
        x = ops.transpose(x, (0, 1, 3, 2, 4))  # B, Tp, Fp, p_time, p_freq
        x = ops.reshape(x, (-1, time_patches, freq_patches, p * p))
        return self.proj(x)  # B, Tp, Fp, D

    def compute_output_shape(self, input_shape):
        self._check(input_shape)
        frames = input_shape[1]
        return (input_shape[0], None if frames is None else frames // self.patch_size,
                self.num_mels // self.patch_size, self.dim)

    def get_config(self):
        config = super().get_config()
        config.update({"dim": self.dim, "patch_size": self.patch_size, "num_mels": self.num_mels,
                       "use_bias": self.use_bias})
        return config


@keras.saving.register_keras_serializable(package="keras_bat")
class ChunkTokens(Layer):
    """Splits a patch grid into time chunks, adds positions and a class token.

    Args:
        dim: int, token width.
        freq_patches: int, frequency patches per time step (8 for 128 mels).
        chunk_time_patches: int, time patches per chunk. Defaults to `64`.
        patch_size: int, frames per time patch (to read a frame mask). Defaults to `16`.
        class_token: bool, put a learned class token in front of each chunk
            and add the sine-cosine table (BAT); `False` returns the bare
            patch tokens (BEATs). Defaults to `True`.

    Call arguments:
        patch_grid: tensor `(batch, time_patches, freq_patches, dim)`.
        padding_mask: optional tensor `(batch, frames)`, true for the real
            frames, which come first (padding at the end); a time patch is
            kept when any of its frames is real.

    Returns:
        Dict with `tokens` `(batch * chunks, 1 + chunk_len * freq_patches, dim)`
        (class token first, if any; patches time-major), `key_mask` of the same
        leading shape (true for tokens to attend to), `key_lengths`
        `(batch * chunks,)` (the same padding as lengths: the tokens to attend
        to come first; `None` when no token is padding, i.e. without a
        padding mask and with whole chunks, so that attention takes its
        unmasked path), and `chunk_weights`
        `(batch, chunks)` (1 for chunks holding any real patch).
    """

    def __init__(self, dim, freq_patches, chunk_time_patches=64, patch_size=16, class_token=True, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.freq_patches = freq_patches
        self.chunk_time_patches = chunk_time_patches
        self.patch_size = patch_size
        self.class_token = class_token

    def build(self, input_shape):
        if not self.class_token:
            self.built = True
            return
        self.cls_token = self.add_weight(
            shape=(1, 1, self.dim), initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="cls_token")
        table = sincos_position_table(self.dim, self.freq_patches, self.chunk_time_patches)
        self.pos_embed = self.add_weight(
            shape=table.shape, initializer=keras.initializers.Constant(table),
            trainable=False, name="pos_embed")
        self.built = True

    def _layout(self, time_patches):
        chunk_len = min(time_patches, self.chunk_time_patches)
        num_chunks = -(-time_patches // chunk_len)
        return chunk_len, num_chunks

    def call(self, patch_grid, padding_mask=None):
        time_patches = _static_length(patch_grid, 1, "time patches")
        chunk_len, num_chunks = self._layout(time_patches)
        pad = chunk_len * num_chunks - time_patches
        f, d = self.freq_patches, self.dim

        # Real time patches per clip: all of them, or as many as the real frames
        # (which come first) reach into; then each chunk's share of them. Only
        # tensor arithmetic: Keras turns Python bounds (ops.full, ops.clip) into
        # device copies, host syncs under the torch backend on a GPU.
        if padding_mask is None:
            real_patches = ops.sum(ops.ones_like(patch_grid[:, :, 0, 0], dtype="int32"), axis=1)  # B
        else:
            frames = ops.cast(ops.cast(padding_mask[:, : time_patches * self.patch_size], "bool"), "int32")
            real_patches = (ops.sum(frames, axis=1) + self.patch_size - 1) // self.patch_size  # B
        chunk_starts = ops.arange(num_chunks, dtype="int32") * chunk_len
        chunk_patches = ops.relu(real_patches[:, None] - chunk_starts[None, :])  # B, chunks; >= 0
        chunk_patches = chunk_len - ops.relu(chunk_len - chunk_patches)  # <= chunk_len
        key_lengths = ops.reshape(chunk_patches * f + int(self.class_token), (-1,))  # B * chunks

        x = ops.pad(patch_grid, [[0, 0], [0, pad], [0, 0], [0, 0]])
        x = ops.reshape(x, (-1, chunk_len * f, d))  # B * chunks, chunk_len * F, D
        if self.class_token:
            x = x + ops.cast(self.pos_embed[None, : chunk_len * f], x.dtype)
            tokens = ops.concatenate([self.class_tokens(ops.shape(x)[0], x.dtype), x], axis=1)
        else:
            tokens = x
        key_mask = ops.arange(tokens.shape[1], dtype="int32")[None, :] < key_lengths[:, None]
        chunk_weights = ops.cast(chunk_patches > 0, "float32")  # B, chunks
        if padding_mask is None and pad == 0:  # known from shapes alone: nothing to mask
            key_lengths = None
        return {"tokens": tokens, "key_mask": key_mask, "key_lengths": key_lengths, "chunk_weights": chunk_weights}

    def position_patches(self, patch_grid):
        """Flattens a one-chunk patch grid time-major and adds positions: `(B, N, D)`."""
        time_patches = _static_length(patch_grid, 1, "time patches")
        if time_patches > self.chunk_time_patches:
            raise UsageError(f"Expected at most {self.chunk_time_patches} time patches (one chunk). "
                             f"Received a patch grid of shape {tuple(patch_grid.shape)}.")
        tokens = ops.reshape(patch_grid, (-1, time_patches * self.freq_patches, self.dim))
        return tokens + ops.cast(self.pos_embed[None, : tokens.shape[1]], tokens.dtype)

    def class_tokens(self, batch_size, dtype):
        """The class token repeated to `(batch_size, 1, dim)`."""
        return ops.broadcast_to(ops.cast(self.cls_token, dtype), (batch_size, 1, self.dim))

    def compute_output_shape(self, input_shape, padding_mask_shape=None):
        time_patches = input_shape[1]
        if time_patches is None:
            tokens, chunks = None, None
        else:
            chunk_len, chunks = self._layout(time_patches)
            tokens = int(self.class_token) + chunk_len * self.freq_patches
        return {"tokens": (None, tokens, self.dim), "key_mask": (None, tokens), "key_lengths": (None,),
                "chunk_weights": (input_shape[0], chunks)}

    def compute_output_spec(self, patch_grid, padding_mask=None):
        shapes = self.compute_output_shape(patch_grid.shape)
        dtypes = {"tokens": patch_grid.dtype, "key_mask": "bool", "key_lengths": "int32", "chunk_weights": "float32"}
        return {k: keras.KerasTensor(shapes[k], dtype=dtypes[k]) for k in shapes}

    def get_config(self):
        config = super().get_config()
        config.update({"dim": self.dim, "freq_patches": self.freq_patches,
                       "chunk_time_patches": self.chunk_time_patches, "patch_size": self.patch_size,
                       "class_token": self.class_token})
        return config


@keras.saving.register_keras_serializable(package="keras_bat")
class MergeChunks(Layer):
    """Puts per-block chunk outputs back together into per-clip features.

    Call arguments:
        block_outputs: list of `depth` tensors `(batch * chunks, 1 + tokens, dim)`.
        patch_grid: the tensor `(batch, time_patches, freq_patches, dim)` the
            chunks came from (read for its shape).
        chunk_weights: tensor `(batch, chunks)`, weights of each chunk's class
            token in the average.

        query_outputs: optional list of `depth` tensors
            `(batch * chunks, num_queries, dim)`, the query tokens' outputs.

    Returns:
        Dict with `cls_tokens` `(batch, depth, dim)` and `patch_tokens`
        `(batch, depth, time_patches, freq_patches, dim)`; with
        `query_outputs`, also `query_tokens` `(batch, depth, num_queries, dim)`
        (averaged over chunks like the class tokens).
    """

    def call(self, block_outputs, patch_grid, chunk_weights, query_outputs=None):
        depth = len(block_outputs)
        time_patches = _static_length(patch_grid, 1, "time patches")
        _, freq_patches, dim = patch_grid.shape[1:]
        num_chunks = chunk_weights.shape[1]
        x = ops.stack(block_outputs, axis=1)  # B * chunks, L, 1 + tokens, D
        x = ops.reshape(x, (-1, num_chunks, depth, x.shape[2], dim))  # B, chunks, L, 1 + tokens, D
        weights = ops.cast(chunk_weights, x.dtype)  # B, chunks

        def chunk_mean(values):  # B, chunks, ... -> B, ...
            w = ops.reshape(weights, (-1, num_chunks) + (1,) * (len(values.shape) - 2))
            total = ops.sum(w, axis=1)
            return ops.sum(values * w, axis=1) / ops.maximum(total, ops.ones_like(total))

        cls_tokens = chunk_mean(x[:, :, :, 0])  # B, L, D
        patches = ops.reshape(x[:, :, :, 1:], (-1, num_chunks, depth, x.shape[3] // freq_patches,
                                               freq_patches, dim))
        patches = ops.transpose(patches, (0, 2, 1, 3, 4, 5))  # B, L, chunks, chunk_len, F, D
        patches = ops.reshape(patches, (-1, depth, patches.shape[2] * patches.shape[3],
                                        freq_patches, dim))[:, :, :time_patches]
        outputs = {"cls_tokens": cls_tokens, "patch_tokens": patches}
        if query_outputs is not None:
            queries = ops.stack(query_outputs, axis=1)  # B * chunks, L, Q, D
            queries = ops.reshape(queries, (-1, num_chunks) + tuple(queries.shape[1:]))
            outputs["query_tokens"] = chunk_mean(queries)  # B, L, Q, D
        return outputs

    def compute_output_spec(self, block_outputs, patch_grid, chunk_weights, query_outputs=None):
        batch, time_patches, freq_patches, dim = patch_grid.shape
        depth = len(block_outputs)
        dtype = block_outputs[0].dtype
        specs = {
            "cls_tokens": keras.KerasTensor((batch, depth, dim), dtype=dtype),
            "patch_tokens": keras.KerasTensor((batch, depth, time_patches, freq_patches, dim), dtype=dtype),
        }
        if query_outputs is not None:
            num_queries = query_outputs[0].shape[1]
            specs["query_tokens"] = keras.KerasTensor((batch, depth, num_queries, dim), dtype=dtype)
        return specs


@keras.saving.register_keras_serializable(package="keras_bat")
class PrependQueries(Layer):
    """Puts one block's query tokens in front of every chunk's tokens.

    Query tokens (visual query tokens, VQT) are read by a block but are not
    keys: the block is called with `key_offset=num_queries` (and key lengths
    counted with the queries in front).

    Call arguments:
        tokens: tensor `(batch * chunks, tokens, dim)`.
        queries: tensor `(batch, num_queries, dim)`.
        chunk_weights: tensor `(batch, chunks)` (read for the number of chunks).

    Returns:
        Tensor `(batch * chunks, num_queries + tokens, dim)`, the queries first.
    """

    def call(self, tokens, queries, chunk_weights):
        num_chunks = _static_length(chunk_weights, 1, "chunks")
        queries = ops.repeat(ops.cast(queries, tokens.dtype), num_chunks, axis=0)  # B * chunks, Q, D
        return ops.concatenate([queries, tokens], axis=1)

    def compute_output_spec(self, tokens, queries, chunk_weights):
        length = None if tokens.shape[1] is None else tokens.shape[1] + queries.shape[1]
        return keras.KerasTensor((tokens.shape[0], length, tokens.shape[2]), dtype=tokens.dtype)


@keras.saving.register_keras_serializable(package="keras_bat")
class KeyLengthsWithQueries(Layer):
    """Key lengths counted with `num_queries` query tokens in front (`PrependQueries`);
    `None` (no padding) stays `None`.

    Args:
        num_queries: int.
    """

    def __init__(self, num_queries, **kwargs):
        super().__init__(**kwargs)
        self.num_queries = int(num_queries)

    def call(self, key_lengths):
        return None if key_lengths is None else key_lengths + self.num_queries

    def compute_output_spec(self, key_lengths):
        return keras.KerasTensor(key_lengths.shape, dtype=key_lengths.dtype)

    def get_config(self):
        return {**super().get_config(), "num_queries": self.num_queries}
