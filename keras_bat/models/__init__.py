"""Keras models of keras-bat."""

from keras_bat.models.audio_classifier import AudioClassifier
from keras_bat.models.audio_embedder import AudioEmbedder
from keras_bat.models.bat_backbone import BATBackbone
from keras_bat.models.bat_pretrainer import BATPretrainer
from keras_bat.models.beats_backbone import BEATsBackbone
from keras_bat.models.encoder_graph import RandomWeightsWarning, encode_in_chunks
from keras_bat.models.presets import BACKBONE_PRESETS, BEATS_PRESETS

__all__ = [
    "AudioClassifier", "AudioEmbedder", "BACKBONE_PRESETS", "BATBackbone", "BATPretrainer", "BEATS_PRESETS",
    "BEATsBackbone", "RandomWeightsWarning", "encode_in_chunks",
]
