"""The HEAR 2021 API (hear-eval-kit, hearvalidator) for keras-bat's encoders.

    model = keras_bat.hear.load_model("my_preset")          # or "", a .keras file, an official checkpoint
    scene = keras_bat.hear.get_scene_embeddings(audio, model)                # (n_sounds, dim)
    frames, times = keras_bat.hear.get_timestamp_embeddings(audio, model)    # (n_sounds, n_patches, dim), ms

`audio` is `(n_sounds, n_samples)` at 16 kHz, any length; the results are
tensors of the Keras backend (torch tensors, TensorFlow tensors, JAX arrays).
The model is an `AudioEmbedder`: a `torch.nn.Module` under torch; under
TensorFlow it comes wrapped in a `tf.Module`, which the validator asks for.

Validate with `keras-bat hear-validate [-m model]`: it imports Keras before
TensorFlow. Run as `hear-validator keras_bat.hear` with `KERAS_BACKEND=torch`,
the validator's own `import tensorflow` aborts the process (TensorFlow imports
Keras, whose torch backend loads Triton's LLVM beside TensorFlow's: `LLVM
ERROR: inconsistency in registered CommandLine options`). In your own
scripts, import keras (or keras_bat) before tensorflow under the torch backend.
"""

import os

import keras
import numpy as np

from keras_bat.errors import UsageError
from keras_bat.models.audio_embedder import AudioEmbedder

DEFAULT_PRESET = "bat_base"


def load_model(model_file_path="", encoder=None, preset=DEFAULT_PRESET, layers="mean", scene_pooling="cls",
               batch_size=16, checkpoint_key=None):
    """The HEAR model: an `AudioEmbedder` with `sample_rate`,
    `scene_embedding_size` and `timestamp_embedding_size`.

    Args:
        model_file_path: `""` (the `preset` architecture, randomly
            initialised: it warns), a preset directory (`save_to_preset` of a
            backbone or an `AudioClassifier`), a `.keras` file (an
            `AudioEmbedder`, a backbone or an `AudioClassifier`), or an
            official checkpoint (`.pt`, `.safetensors`) of `encoder` for the
            `preset` architecture.
        encoder: `"bat"`, `"eat"`, `"sslam"` or `"beats"`: the loader of an
            official checkpoint. Defaults to the preset's encoder.
        preset: the architecture an official checkpoint is loaded into.
            Defaults to `"bat_base"`.
        layers, scene_pooling: see `AudioEmbedder`.
        batch_size: int, clips per forward pass. Defaults to `16`.
        checkpoint_key: e.g. `"ema_encoder"` for an official pretraining
            checkpoint's teacher.
    """
    from keras_bat.models.presets import load_model_source

    path = os.fspath(model_file_path or "") or preset
    model = load_model_source(path, encoder=encoder, checkpoint_key=checkpoint_key, architecture=preset)
    embedder = _as_embedder(model, path, layers, scene_pooling)
    embedder.hear_batch_size = int(batch_size)
    if keras.backend.backend() == "tensorflow":  # the HEAR API's TensorFlow form: a tf.Module
        return _tensorflow_module(embedder)
    return embedder


def get_scene_embeddings(audio, model):
    """`(n_sounds, n_samples)` audio -> `(n_sounds, scene_embedding_size)` float32."""
    return _embed(audio, model, "scene_embeddings")


def get_timestamp_embeddings(audio, model):
    """`(n_sounds, n_samples)` audio -> (embeddings `(n_sounds, n_timestamps,
    timestamp_embedding_size)` float32, timestamps `(n_sounds, n_timestamps)`
    in milliseconds: the centre of each time patch, every 160 ms for BAT)."""
    embedder = _embedder(model)
    embeddings = _embed(audio, model, "timestamp_embeddings")
    times = embedder.timestamps(int(embeddings.shape[1]))
    timestamps = np.broadcast_to(times, (int(embeddings.shape[0]), times.size))
    return embeddings, keras.ops.convert_to_tensor(np.ascontiguousarray(timestamps))


def _embed(audio, model, output):
    embedder = _embedder(model)
    audio = keras.ops.convert_to_numpy(audio).astype("float32")
    if audio.ndim != 2:
        raise UsageError(f"HEAR audio must be (n_sounds, n_samples). Received shape: {audio.shape}")
    if audio.shape[0] == 0:
        raise UsageError("HEAR audio holds no sounds (n_sounds = 0).")
    step = getattr(embedder, "hear_batch_size", 16)
    # Called eagerly, batch by batch: shapes stay known (the encoders need the number of frames);
    # the frozen encoder's variables ask for no gradient.
    parts = [keras.ops.convert_to_numpy(embedder(audio[i:i + step])[output]) for i in range(0, len(audio), step)]
    return keras.ops.convert_to_tensor(np.concatenate(parts).astype("float32"))


def _embedder(model):
    embedder = getattr(model, "embedder", model)
    if not isinstance(embedder, AudioEmbedder):
        raise TypeError(f"Expected a model from keras_bat.hear.load_model. Received: {type(model).__name__}")
    return embedder


def _as_embedder(model, path, layers, scene_pooling):
    """The `AudioEmbedder` of what `path` held: itself, a classifier's backbone, or a backbone."""
    from keras_bat.models import AudioClassifier

    if isinstance(model, AudioEmbedder):
        return model
    if isinstance(model, AudioClassifier):
        if model.backbone is None:
            raise UsageError(f"{path} holds a head trained on precomputed features: it has no encoder to embed with.")
        return AudioEmbedder(model.backbone, layers=layers, scene_pooling=scene_pooling)
    if hasattr(model, "make_frontend"):
        return AudioEmbedder(model, layers=layers, scene_pooling=scene_pooling)
    raise UsageError(f"{path} holds a {type(model).__name__}; expected an AudioEmbedder, a backbone or an "
                     "AudioClassifier.")


def _tensorflow_module(embedder):
    """The embedder inside a `tf.Module` (Keras 3 models are not one under TensorFlow)."""
    import tensorflow as tf

    class HearModule(tf.Module):
        def __init__(self, embedder):
            super().__init__(name="keras_bat_hear")
            self.embedder = embedder
            self.sample_rate = embedder.sample_rate
            self.scene_embedding_size = embedder.scene_embedding_size
            self.timestamp_embedding_size = embedder.timestamp_embedding_size

    return HearModule(embedder)
