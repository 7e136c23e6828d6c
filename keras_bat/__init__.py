"""keras-bat: BAT (Better Audio Transformer) and Convex Gated Probing in Keras 3.

`import keras_bat` is light: it imports neither Keras nor a backend, so that
`keras_bat.cli` can read `--backend` first. The names below are imported on
first use, Keras started quietly before them (`keras_bat.runtime.start_frameworks`).
"""

import importlib

from keras_bat.errors import UsageError  # noqa: F401  (public)

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "AudioClassifier": "keras_bat.models", "AudioTagger": "keras_bat.workflows.tag", "BATBackbone": "keras_bat.models",
    "EncoderModel": "keras_bat.models", "KaldiFbank": "keras_bat.layers", "LogMelSpectrogram": "keras_bat.layers",
    "upload_preset": "keras_bat.convert.hub",
}
_SUBPACKAGES = ("convert", "data", "heads", "layers", "models", "ops", "training", "workflows")

__all__ = sorted([*_EXPORTS, *_SUBPACKAGES, "UsageError"])


def __getattr__(name):
    if name not in _EXPORTS and name not in _SUBPACKAGES:
        raise AttributeError(f"module 'keras_bat' has no attribute {name!r}")
    from keras_bat.runtime import start_frameworks

    start_frameworks()
    if name in _SUBPACKAGES:
        return importlib.import_module(f"keras_bat.{name}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *__all__])
