"""Keras layers of keras-bat: frontends (and their registry), patching, transformer blocks,
the pretraining decoder, and the chunk-merge contract. An encoder family's own layers live
in its folder (e.g. `keras_bat.models.beats`)."""

from keras_bat.layers.chunk_merge import WHOLE_CLIP_MERGES, ChunkSummaries
from keras_bat.layers.decoder import MaskedDecoder
from keras_bat.layers.dense import Dense
from keras_bat.layers.frontend import (FRONTENDS, Frontend, KaldiFbank, KaldiSettings, LogMelSpectrogram,
                                       build_frontend, register_frontend)
from keras_bat.layers.masking import inverse_block_mask
from keras_bat.layers.patching import ChunkTokens, MergeChunks, PatchEmbedding
from keras_bat.layers.transformer import DropPath, GatedSelfAttention, TransformerBlock

__all__ = [
    "ChunkSummaries", "ChunkTokens", "Dense", "DropPath", "FRONTENDS", "Frontend", "GatedSelfAttention",
    "KaldiFbank", "KaldiSettings", "LogMelSpectrogram", "MaskedDecoder", "MergeChunks", "PatchEmbedding",
    "TransformerBlock", "WHOLE_CLIP_MERGES", "build_frontend", "inverse_block_mask", "register_frontend",
]
