"""Official checkpoints <-> Keras weights: the parameter tables (`mapping`), reading and
writing state dicts (`checkpoints`), the Hub (`hub`) and the probe heads' converter (`heads`).
Each encoder family's converter lives in its own folder and is imported from there
(`from keras_bat.models.bat import load_official_weights`)."""

from keras_bat.convert.checkpoints import read_state_dict, save_official_weights
from keras_bat.convert.heads import head_parameters, load_official_head_weights
from keras_bat.convert.hub import upload_preset
from keras_bat.convert.mapping import Param, assign_parameters

# Where the family converters went (keras-bat 0.x kept them here).
MOVED = {**dict.fromkeys(("backbone_parameters", "checkpoint_time_patches", "decoder_parameters", "eat_parameters",
                          "load_eat_weights", "load_official_pretrainer_weights", "load_official_weights"),
                         "keras_bat.models.bat"),
         **dict.fromkeys(("beats_parameters", "load_beats_weights"), "keras_bat.models.beats")}


def __getattr__(name):
    if name in MOVED:
        raise AttributeError(f"keras_bat.convert.{name} moved to its encoder family: "
                             f"from {MOVED[name]} import {name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Param", "assign_parameters", "head_parameters", "load_official_head_weights", "read_state_dict",
           "save_official_weights", "upload_preset"]
