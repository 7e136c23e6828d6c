"""The BEATs family: BEATsBackbone, its layers, presets, Kaldi-fbank frontend and converter.
Everything the family adds to keras-bat is registered here."""

from keras_bat.layers.frontend import KaldiSettings, register_frontend
from keras_bat.models.beats.beats_backbone import BEATsBackbone
from keras_bat.models.beats.beats_convert import beats_parameters, load_beats_weights
from keras_bat.models.beats.beats_layers import BEATsAttention, BEATsBlock, ConvPositionEmbedding, RelativePositionBias
from keras_bat.models.beats.beats_presets import BEATS_PRESETS, BEATS_STATISTICS
from keras_bat.models.encoders import register_encoder

# 16-bit sample values (scaled by 2**15), Povey window, no mean removed.
register_frontend("beats", KaldiSettings(BEATS_STATISTICS, window="povey", remove_mean=False,
                                         waveform_scale=2.0 ** 15))
register_encoder("beats", BEATsBackbone, load_beats_weights, presets=BEATS_PRESETS)

__all__ = ["BEATsAttention", "BEATsBackbone", "BEATsBlock", "ConvPositionEmbedding", "RelativePositionBias",
           "beats_parameters", "load_beats_weights"]
