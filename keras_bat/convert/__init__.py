"""Converters from the official BAT checkpoints to Keras weights."""

from keras_bat.convert.beats import beats_parameters, load_beats_weights
from keras_bat.convert.eat import eat_parameters, load_eat_weights
from keras_bat.convert.heads import head_parameters, load_official_head_weights
from keras_bat.convert.official import (
    backbone_parameters,
    checkpoint_time_patches,
    decoder_parameters,
    load_official_pretrainer_weights,
    load_official_weights,
    read_state_dict,
    save_official_weights,
)

__all__ = ["backbone_parameters", "beats_parameters", "checkpoint_time_patches", "decoder_parameters",
           "eat_parameters", "head_parameters", "load_beats_weights", "load_eat_weights",
           "load_official_head_weights", "load_official_pretrainer_weights", "load_official_weights",
           "read_state_dict", "save_official_weights"]
