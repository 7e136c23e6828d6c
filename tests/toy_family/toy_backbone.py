"""The toy family's frontend and encoder."""

import keras
import numpy as np
from keras import ops

from keras_bat.convert.mapping import Param
from keras_bat.layers.frontend import Frontend, fit_frames
from keras_bat.layers.patching import PatchEmbedding
from keras_bat.models.backbone import EncoderModel



@keras.saving.register_keras_serializable(package="keras_bat_toy")
class BandEnergies(Frontend):
    """`log(1 + magnitude)` of `num_mels` equal slices of each 10 ms frame's spectrum."""

    def __init__(self, num_mels=16, time_frames=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_mels, self.time_frames = num_mels, time_frames
        self.sample_rate, self.hop_length, self.window_length, self.first_frame_center = 16000, 160, 160, 80

    def num_frames(self, num_samples):
        return num_samples // self.hop_length

    def call(self, waveforms):
        frames = self.num_frames(waveforms.shape[1])
        framed = ops.reshape(waveforms[:, :frames * self.hop_length], (-1, frames, self.hop_length))
        real, imaginary = ops.rfft(framed)
        spectrum = ops.sqrt(ops.square(real) + ops.square(imaginary))[..., :self.hop_length // 2]  # B, frames, 80
        bands = ops.mean(ops.reshape(spectrum, (-1, frames, self.num_mels, spectrum.shape[-1] // self.num_mels)), -1)
        return fit_frames(ops.log1p(bands), self.time_frames)

    def get_config(self):
        return {**super().get_config(), "num_mels": self.num_mels, "time_frames": self.time_frames}


@keras.saving.register_keras_serializable(package="keras_bat_toy")
class PatchMeanEncoder(EncoderModel):
    """A linear patch embedding, its tokens the only block's output."""

    frontend = "band_energies"

    def __init__(self, dim=8, patch_size=4, num_mels=16, chunk_time_patches=4, num_query_tokens=0, use_kernels=None,
                 dtype=None, **kwargs):
        spectrogram = keras.Input((None, num_mels), name="spectrogram")
        embed = PatchEmbedding(dim, patch_size, num_mels, dtype=dtype, name="patch_embed")
        tokens = embed(spectrogram)  # B, T, F, D
        outputs = {"cls_tokens": ops.mean(tokens, axis=(1, 2))[:, None], "patch_tokens": tokens[:, None]}
        super().__init__(inputs=spectrogram, outputs=outputs, dtype=dtype, **kwargs)
        self.embed = embed
        self.dim, self.depth, self.patch_size, self.num_mels = dim, 1, patch_size, num_mels
        self.chunk_time_patches, self.num_query_tokens = chunk_time_patches, num_query_tokens
        self.use_kernels = use_kernels

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "dim": self.dim, "patch_size": self.patch_size,
                "num_mels": self.num_mels, "chunk_time_patches": self.chunk_time_patches,
                "num_query_tokens": self.num_query_tokens, "use_kernels": self.use_kernels,
                "dtype": keras.dtype_policies.serialize(self.dtype_policy)}

    def official_parameters(self):
        return {"embed.weight": Param(self.embed.proj.kernel, np.transpose, np.transpose),
                "embed.bias": Param(self.embed.proj.bias)}

    @classmethod
    def arguments_for_checkpoint(cls, state, config):
        return {}
