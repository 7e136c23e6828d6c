"""Probing heads, each a Keras layer called on BATBackbone's output dict."""

from keras_bat.heads.asr import ASRHead
from keras_bat.heads.base import plot_layer_weights
from keras_bat.heads.linear import GroupLasso, Head2Toe, LayerMixedLinear, LinearHead
from keras_bat.heads.prototypes import CGP, ProtoBin
from keras_bat.heads.vqt import VQTHead
from keras_bat.registry import Registry

# The heads a recipe names with `head.type`; a new head is its module and one line here (or
# `register_head` from outside the package).
HEADS = Registry("head type", {"cgp": CGP, "linear": LinearHead, "lcgp": LayerMixedLinear, "h2t": Head2Toe,
                               "pb": ProtoBin, "vqt": VQTHead, "asr": ASRHead})


def register_head(name, head_class):
    """Makes `head_class` (a Keras layer with the `HeadContract` declarations) `head.type=name`."""
    HEADS.register(name, head_class)


def get_head(name):
    """The head class a recipe's `head.type` names."""
    return HEADS[name]


__all__ = ["ASRHead", "CGP", "GroupLasso", "HEADS", "Head2Toe", "LayerMixedLinear", "LinearHead", "ProtoBin",
           "VQTHead", "get_head", "plot_layer_weights", "register_head"]
