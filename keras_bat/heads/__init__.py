"""Probing heads, each a Keras layer called on BATBackbone's output dict."""

from keras_bat.heads.asr import ASRHead
from keras_bat.heads.base import plot_layer_weights
from keras_bat.heads.linear import GroupLasso, Head2Toe, LayerMixedLinear, LinearHead
from keras_bat.heads.prototypes import CGP, ProtoBin
from keras_bat.heads.vqt import VQTHead

__all__ = ["ASRHead", "CGP", "GroupLasso", "Head2Toe", "LayerMixedLinear", "LinearHead", "ProtoBin",
           "VQTHead", "plot_layer_weights"]
