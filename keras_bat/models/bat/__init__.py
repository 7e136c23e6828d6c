"""The BAT family: BAT (gated attention, log-mel frontend), and EAT and SSLAM (BAT's encoder
without the gate, on a Kaldi fbank), with the converters of their official checkpoints.
Everything the family adds to keras-bat is registered here."""

from keras_bat.layers.frontend import KaldiSettings, register_frontend
from keras_bat.models.bat.bat_backbone import BATBackbone
from keras_bat.models.bat.bat_convert import (backbone_parameters, checkpoint_time_patches, decoder_parameters,
                                              load_official_pretrainer_weights, load_official_weights)
from keras_bat.models.bat.eat_convert import eat_parameters, load_eat_weights
from keras_bat.models.bat.bat_presets import BAT_PRESETS, EAT_PRESETS, EAT_STATISTICS, SSLAM_PRESETS
from keras_bat.models.bat.bat_pretrainer import BATPretrainer
from keras_bat.models.encoders import register_encoder

for _frontend in ("eat", "sslam"):  # mean removed, symmetric Hann window
    register_frontend(_frontend, KaldiSettings(EAT_STATISTICS, window="hanning", remove_mean=True))
register_encoder("bat", BATBackbone, load_official_weights, presets=BAT_PRESETS)
register_encoder("eat", BATBackbone, load_eat_weights, {"use_gate": False, "frontend": "eat"}, EAT_PRESETS)
register_encoder("sslam", BATBackbone, load_eat_weights, {"use_gate": False, "frontend": "sslam"}, SSLAM_PRESETS)

__all__ = ["BATBackbone", "BATPretrainer", "backbone_parameters", "checkpoint_time_patches", "decoder_parameters",
           "eat_parameters", "load_eat_weights", "load_official_pretrainer_weights", "load_official_weights"]
