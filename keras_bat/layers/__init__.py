"""Keras layers of keras-bat: frontends, patching and transformer blocks."""

from keras_bat.layers.beats import BEATsAttention, BEATsBlock, ConvPositionEmbedding, RelativePositionBias
from keras_bat.layers.decoder import MaskedDecoder
from keras_bat.layers.dense import Dense
from keras_bat.layers.frontend import KaldiFbank, LogMelSpectrogram
from keras_bat.layers.masking import inverse_block_mask
from keras_bat.layers.patching import ChunkTokens, MergeChunks, PatchEmbedding
from keras_bat.layers.transformer import DropPath, GatedSelfAttention, TransformerBlock

__all__ = [
    "BEATsAttention", "BEATsBlock", "ChunkTokens", "ConvPositionEmbedding", "RelativePositionBias", "Dense",
    "DropPath", "GatedSelfAttention", "KaldiFbank", "LogMelSpectrogram", "MaskedDecoder", "MergeChunks",
    "PatchEmbedding", "TransformerBlock", "inverse_block_mask",
]
