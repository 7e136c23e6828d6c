"""A toy encoder family, the way a new family is added: this folder, copied to
keras_bat/models/toy/, and nothing else (tests/test_extending.py copies it into a copy of
the package and runs `keras-bat probe` and `keras-bat tag` with it). Everything the family
adds (its encoder, presets and frontend) is registered here."""

from keras_bat.layers.frontend import register_frontend
from keras_bat.models.encoders import register_encoder
from .convert import load_patch_mean_weights
from .toy_backbone import BandEnergies, PatchMeanEncoder

register_frontend("band_energies", lambda num_mels, time_frames, dataset, use_kernels:
                  BandEnergies(num_mels, time_frames))
register_encoder("patch_mean", PatchMeanEncoder, load_patch_mean_weights,
                 presets={"patch_mean_tiny": {"description": "a toy: band energies, one linear patch embedding",
                                              "config": {"dim": 8}}})

__all__ = ["BandEnergies", "PatchMeanEncoder"]
