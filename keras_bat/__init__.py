"""keras-bat: BAT (Better Audio Transformer) and Convex Gated Probing in Keras 3."""

from keras_bat.runtime import start_frameworks

start_frameworks()

from keras_bat import convert, heads, layers, models, ops, training  # noqa: E402
from keras_bat.convert.hub import upload_preset  # noqa: E402
from keras_bat.layers import KaldiFbank, LogMelSpectrogram  # noqa: E402
from keras_bat.models import AudioClassifier, BATBackbone  # noqa: E402
from keras_bat.workflows.tag import AudioTagger  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "AudioClassifier", "AudioTagger", "BATBackbone", "KaldiFbank", "LogMelSpectrogram", "convert", "heads", "layers",
    "models", "ops", "training", "upload_preset",
]
