"""AudioEmbedder: waveforms -> clip and time-patch embeddings of a frozen encoder."""

import keras
import numpy as np
from keras import ops

from keras_bat.errors import UsageError
from keras_bat.layers.frontend import fit_frames
from keras_bat.layers.patching import whole_patch_frames

SCENE_POOLINGS = ("cls", "mean")


@keras.saving.register_keras_serializable(package="keras_bat")
class AudioEmbedder(keras.Model):
    """Embeddings of a frozen encoder, from waveforms of any length.

    The frontend turns each clip into frames (all of them, unless it fixes
    `time_frames`), zero-padded to whole patches (`whole_patch_frames`); the backbone
    encodes them (in chunks beyond `chunk_time_patches`); its blocks are mixed
    with fixed weights. Timestamp embeddings are the mixed patch tokens
    averaged over frequency, one per time patch (160 ms for BAT); the scene
    embedding is the mixed class token (`"cls"`) or the mean of the timestamp
    embeddings (`"mean"`). This is what `keras_bat.hear` serves and what
    `keras_bat.export` exports for embeddings.

    Args:
        backbone: a `BATBackbone` or `BEATsBackbone`; it is frozen.
        frontend: waveforms -> spectrogram layer. Defaults to
            `backbone.make_frontend()` (any length).
        layers: which blocks, mixed with fixed weights: `"mean"` (every
            block, equal weights), `"last"`, a list of block indices
            (averaged), or `depth` non-negative weights (normalised to sum
            to 1; e.g. a trained CGP head's `layer_weights`). Defaults to
            `"mean"`.
        scene_pooling: `"cls"` or `"mean"`. Defaults to `"cls"`.

    Outputs:
        Dict with `scene_embeddings` `(batch, dim)` and `timestamp_embeddings`
        `(batch, time_patches, dim)`, float32 under any dtype policy.
    """

    def __init__(self, backbone, frontend=None, layers="mean", scene_pooling="cls", **kwargs):
        super().__init__(**kwargs)
        if scene_pooling not in SCENE_POOLINGS:
            raise UsageError(f"`scene_pooling` must be one of {SCENE_POOLINGS}. Received: {scene_pooling!r}")
        self.backbone = backbone
        self.backbone.trainable = False
        self.frontend = frontend if frontend is not None else backbone.make_frontend()
        self.layers_option = layers
        self.layer_weights = block_weights(layers, backbone.depth)
        self.scene_pooling = scene_pooling

    # --- What the HEAR API reads ----------------------------------------------------

    @property
    def sample_rate(self):
        return int(self.frontend.sample_rate)

    @property
    def scene_embedding_size(self):
        return int(self.backbone.dim)

    @property
    def timestamp_embedding_size(self):
        return int(self.backbone.dim)

    def timestamps(self, time_patches):
        """Milliseconds from the clip's start to the centre of each time patch
        (the mean of its frames' centres), float32 `(time_patches,)`."""
        return (1000.0 * self.frontend.patch_centers(time_patches, self.backbone.patch_size)).astype("float32")

    # --- Forward pass ------------------------------------------------------------------

    def call(self, waveforms):
        spectrogram = self.frontend(waveforms)
        frames = spectrogram.shape[1]
        if frames is None:
            raise UsageError("AudioEmbedder needs a known number of frames when it is traced for any length: give it "
                             "a frontend with `time_frames` (e.g. `backbone.make_frontend(time_frames=1024)`).")
        spectrogram = fit_frames(spectrogram, whole_patch_frames(frames, self.backbone.patch_size))
        features = self.backbone(spectrogram, training=False)
        weights = ops.convert_to_tensor(self.layer_weights)
        patches = ops.mean(ops.cast(features["patch_tokens"], "float32"), axis=3)  # B, L, T, D
        timestamp_embeddings = ops.einsum("bltd,l->btd", patches, weights)
        if self.scene_pooling == "mean":
            scene_embeddings = ops.mean(timestamp_embeddings, axis=1)
        else:
            scene_embeddings = ops.einsum("bld,l->bd", ops.cast(features["cls_tokens"], "float32"), weights)
        return {"scene_embeddings": scene_embeddings, "timestamp_embeddings": timestamp_embeddings}

    def get_config(self):
        config = super().get_config()
        layers = self.layers_option
        config.update({
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "frontend": keras.saving.serialize_keras_object(self.frontend),
            "layers": layers if isinstance(layers, str) else [float(w) if isinstance(w, float) else int(w)
                                                              for w in np.asarray(layers).tolist()],
            "scene_pooling": self.scene_pooling,
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", "frontend"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def block_weights(layers, depth):
    """float32 `(depth,)` weights summing to 1 for an `AudioEmbedder` `layers` option."""
    if isinstance(layers, str):
        if layers not in ("mean", "last"):
            raise UsageError(f"`layers` must be 'mean', 'last', block indices or {depth} weights. "
                             f"Received: {layers!r}")
        weights = np.ones(depth) if layers == "mean" else np.eye(depth)[-1]
        return (weights / weights.sum()).astype("float32")
    values = np.asarray(layers)
    if values.ndim != 1 or values.size == 0:
        raise UsageError(f"`layers` must be a flat list of block indices or weights. Received: {layers!r}")
    if np.issubdtype(values.dtype, np.integer):
        if values.min() < -depth or values.max() >= depth:
            raise UsageError(f"Block indices must lie in [-{depth}, {depth}). Received: {layers!r}")
        weights = np.bincount(values % depth, minlength=depth).astype("float64")
    else:
        if values.size != depth or values.min() < 0 or values.sum() <= 0:
            raise UsageError(f"Layer weights must be {depth} non-negative numbers, not all zero. "
                             f"Received: {layers!r}")
        weights = values.astype("float64")
    return (weights / weights.sum()).astype("float32")
