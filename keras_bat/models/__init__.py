"""Keras models of keras-bat."""

from keras_bat.models.bat_backbone import BATBackbone
from keras_bat.models.presets import BACKBONE_PRESETS

__all__ = ["BACKBONE_PRESETS", "BATBackbone"]
