"""The toy family's official checkpoints: `embed.weight` and `embed.bias`, a torch Linear's layout."""

from keras_bat.convert.checkpoints import read_state_dict
from keras_bat.convert.mapping import assign_parameters


def load_patch_mean_weights(backbone, source):
    assign_parameters(backbone.official_parameters(), read_state_dict(source), "", False, "PatchMeanEncoder")
    return backbone
