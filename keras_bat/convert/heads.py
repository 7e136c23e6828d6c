"""Official probe-head parameters (models/heads.py of the BAT code) -> keras_bat.heads.

Each head declares its official names (`official_parameters`) and how to read
its feature shapes off official weights (`official_layers_and_dim`).
"""

from keras_bat.convert.checkpoints import read_state_dict
from keras_bat.convert.mapping import assign_parameters
from keras_bat.errors import UsageError


def head_parameters(head):
    """Maps official head parameter names to the head's variables.

    Args:
        head: a built head from `keras_bat.heads`.

    Returns:
        `(params, constants)`: dict `official name -> Param`, and dict of
        buffers that the official head stores and that must match the
        configuration (Head2Toe's `group_scale`).
    """
    if not hasattr(head, "official_parameters"):
        raise TypeError(f"No official parameters are known for {type(head).__name__}.")
    return head.official_parameters()


def _features_shape(head, state, prefix):
    """The backbone-output shapes a head is built for, read off its official weights."""

    def shape(name):
        if prefix + name not in state:
            raise UsageError(f"Cannot build {type(head).__name__} from the checkpoint: "
                             f"{prefix + name!r} is missing.")
        return state[prefix + name].shape

    layers, dim = head.official_layers_and_dim(shape)
    return {"cls_tokens": (None, layers, dim), "patch_tokens": (None, layers, None, None, dim)}


def load_official_head_weights(head, weights, prefix="", skip_unexpected=False):
    """Loads a head's parameters as the official code names them.

    Args:
        head: a head from `keras_bat.heads`; built from the weights' shapes
            if it is not built yet.
        weights: a `.safetensors` or PyTorch file, or a dict of arrays.
        prefix: str, selects the head's keys, e.g. `"cgp_cls/"` or `"head."`.
        skip_unexpected: bool, ignore other keys under `prefix`. Defaults to
            `False`, which raises on them (as on any missing key).

    Returns:
        The head, for chaining.
    """
    state = read_state_dict(weights)
    if not head.built:
        head.build(_features_shape(head, state, prefix))
    params, constants = head_parameters(head)
    assign_parameters(params, state, prefix, skip_unexpected, type(head).__name__, constants)
    return head
