"""The encoders a recipe names with `model.encoder`: each one's backbone class,
the constructor arguments that make it that encoder, and its checkpoint loader.
A new encoder is one entry here (and its backbone module)."""

from typing import Callable, NamedTuple

from keras_bat.convert.beats import load_beats_weights
from keras_bat.convert.eat import load_eat_weights
from keras_bat.convert.official import load_official_weights
from keras_bat.models.bat_backbone import BATBackbone
from keras_bat.models.beats_backbone import BEATsBackbone


class Encoder(NamedTuple):
    backbone_class: type
    fixed_arguments: dict  # constructor arguments that define this encoder
    load_weights: Callable  # (backbone, checkpoint) -> backbone


ENCODERS = {
    "bat": Encoder(BATBackbone, {}, load_official_weights),
    "eat": Encoder(BATBackbone, {"use_gate": False, "frontend": "eat"}, load_eat_weights),
    "sslam": Encoder(BATBackbone, {"use_gate": False, "frontend": "sslam"}, load_eat_weights),
    "beats": Encoder(BEATsBackbone, {}, load_beats_weights),
}


def get_encoder(name):
    """The `Encoder` entry of `name` (`bat`, `eat`, `sslam` or `beats`)."""
    if name not in ENCODERS:
        raise ValueError(f"Unknown encoder {name!r}; expected one of {sorted(ENCODERS)}.")
    return ENCODERS[name]
