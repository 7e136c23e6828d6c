"""Keras models of keras-bat: the encoder families (each in its own folder, registering its
encoders, presets and frontends on import) and the task models built on them.

Every folder here is an encoder family and is imported with this package: a new family is
its folder alone (see tests/test_extending.py)."""

import importlib
import pkgutil

from keras_bat.models.backbone import EncoderModel, RandomWeightsWarning
from keras_bat.models.bat import BATBackbone, BATPretrainer
from keras_bat.models.beats import BEATsBackbone
from keras_bat.models.audio_classifier import AudioClassifier
from keras_bat.models.audio_embedder import AudioEmbedder
from keras_bat.models.encoders import ENCODERS, get_encoder, register_encoder
from keras_bat.models.streaming import ChunkEncoder, RecordingStream

for _family in pkgutil.iter_modules(__path__):
    if _family.ispkg:
        importlib.import_module(f"{__name__}.{_family.name}")

# The built-in presets of each backbone class (name -> description, config, encoder, loader).
BACKBONE_PRESETS = BATBackbone.builtin_presets
BEATS_PRESETS = BEATsBackbone.builtin_presets

__all__ = [
    "AudioClassifier", "AudioEmbedder", "BACKBONE_PRESETS", "BATBackbone", "BATPretrainer", "BEATS_PRESETS",
    "BEATsBackbone", "ChunkEncoder", "ENCODERS", "EncoderModel", "RandomWeightsWarning", "RecordingStream",
    "get_encoder", "register_encoder",
]
