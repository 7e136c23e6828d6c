"""Official checkpoints <-> Keras weights: the parameter tables (`mapping`), reading and
writing state dicts (`checkpoints`), and the converters of BAT, EAT / SSLAM, BEATs and
the probe heads."""

from keras_bat.convert.bat import (
    backbone_parameters,
    checkpoint_time_patches,
    decoder_parameters,
    load_official_pretrainer_weights,
    load_official_weights,
)
from keras_bat.convert.beats import beats_parameters, load_beats_weights
from keras_bat.convert.checkpoints import read_state_dict, save_official_weights
from keras_bat.convert.eat import eat_parameters, load_eat_weights
from keras_bat.convert.heads import head_parameters, load_official_head_weights
from keras_bat.convert.hub import upload_preset
from keras_bat.convert.mapping import Param, assign_parameters

__all__ = ["Param", "assign_parameters", "backbone_parameters", "beats_parameters", "checkpoint_time_patches",
           "decoder_parameters", "eat_parameters", "head_parameters", "load_beats_weights", "load_eat_weights",
           "load_official_head_weights", "load_official_pretrainer_weights", "load_official_weights",
           "read_state_dict", "save_official_weights", "upload_preset"]
