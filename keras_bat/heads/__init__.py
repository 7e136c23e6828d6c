"""Probing heads, each a Keras layer called on BATBackbone's output dict."""

from keras_bat.heads.asr import ASRHead
from keras_bat.heads.base import plot_layer_weights
from keras_bat.heads.linear import GroupLasso, Head2Toe, LayerMixedLinear, LinearHead
from keras_bat.heads.prototypes import CGP, ProtoBin
from keras_bat.heads.vqt import VQTHead

# The heads a recipe names with `head.type`; a new head is its module and one line here (or
# `register_head` from outside the package).
HEADS = {"cgp": CGP, "linear": LinearHead, "lcgp": LayerMixedLinear, "h2t": Head2Toe, "pb": ProtoBin,
         "vqt": VQTHead, "asr": ASRHead}


def register_head(name, head_class):
    """Makes `head_class` (a Keras layer with the `HeadContract` declarations) `head.type=name`."""
    if name in HEADS:
        raise ValueError(f"A head called {name!r} is registered already.")
    HEADS[name] = head_class


def get_head(name):
    """The head class a recipe's `head.type` names."""
    if name not in HEADS:
        raise ValueError(f"Unknown head type {name!r}; expected one of {tuple(HEADS)}.")
    return HEADS[name]


__all__ = ["ASRHead", "CGP", "GroupLasso", "HEADS", "Head2Toe", "LayerMixedLinear", "LinearHead", "ProtoBin",
           "VQTHead", "get_head", "plot_layer_weights", "register_head"]
