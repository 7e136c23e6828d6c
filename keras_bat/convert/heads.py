"""Official probe-head parameters (models/heads.py of the BAT code) -> keras_bat.heads."""

import numpy as np

from keras_bat.convert.official import _layer_norm, _linear, _Param, assign_parameters, read_state_dict
from keras_bat.heads import ASRHead, CGP, Head2Toe, LayerMixedLinear, LinearHead, ProtoBin, VQTHead


def _prototypes(head):
    # Official prototypes are 1 x 1 convolution filters (P, D, 1, 1).
    return _Param(head.prototypes, to_keras=lambda w: w[:, :, 0, 0], to_official=lambda w: w[:, :, None, None])


def _gate(head):
    return _Param(head.layer_logits)


def _lstm(name, layer, bidirectional):
    params = {}
    for suffix, lstm in (("", bidirectional.forward_layer), ("_reverse", bidirectional.backward_layer)):
        cell, tag = lstm.cell, f"l{layer}{suffix}"
        params[f"{name}.weight_ih_{tag}"] = _Param(cell.kernel, np.transpose, np.transpose)
        params[f"{name}.weight_hh_{tag}"] = _Param(cell.recurrent_kernel, np.transpose, np.transpose)
        # PyTorch keeps two biases that are always added; Keras keeps their sum.
        params[f"{name}.bias_ih_{tag}"] = _Param(
            cell.bias, to_keras=lambda ih, hh: ih + hh, extra_sources=(f"{name}.bias_hh_{tag}",))
    return params


def head_parameters(head):
    """Maps official head parameter names to the head's variables.

    Args:
        head: a built head from `keras_bat.heads`.

    Returns:
        `(params, constants)`: dict `official name -> _Param`, and dict of
        buffers that the official head stores and that must match the
        configuration (Head2Toe's `group_scale`).
    """
    params, constants = {}, {}
    if isinstance(head, (LinearHead, LayerMixedLinear, Head2Toe)):
        params.update(_linear("fc", head.fc))
        if head.norm is not None:
            params.update(_layer_norm("ln", head.norm))
        if isinstance(head, LayerMixedLinear):
            params["block_attention"] = _gate(head)
        if isinstance(head, Head2Toe):
            group_size = head.dim if head.layer_wise_lasso else head.num_classes
            constants["group_scale"] = np.float32(np.sqrt(group_size))
    elif isinstance(head, (CGP, ProtoBin)):
        params.update(_linear("fc", head.fc))
        params["prototype_vectors"] = _prototypes(head)
        if isinstance(head, CGP):
            params["block_attention"] = _gate(head)
    elif isinstance(head, VQTHead):
        params["vqt"] = _Param(head.query_tokens)
        if head.norm is not None:  # official: Sequential(LayerNorm, Linear)
            params.update(_layer_norm("head.0", head.norm))
            params.update(_linear("head.1", head.fc))
        else:
            params.update(_linear("head", head.fc))
    elif isinstance(head, ASRHead):
        params["block_attention"] = _gate(head)
        params["upsample.weight"] = _Param(head.upsample_kernel)
        params["upsample.bias"] = _Param(head.upsample_bias)
        for i, lstm in enumerate(head.lstms):
            params.update(_lstm("lstm", i, lstm))
        params.update(_linear("fc", head.fc))
        if head.norm is not None:
            params.update(_layer_norm("ln", head.norm))
    else:
        raise TypeError(f"No official parameters are known for {type(head).__name__}.")
    return params, constants


def _features_shape(head, state, prefix):
    """The backbone-output shapes a head is built for, read off its official weights."""

    def shape(name):
        if prefix + name not in state:
            raise ValueError(f"Cannot build {type(head).__name__} from the checkpoint: "
                             f"{prefix + name!r} is missing.")
        return state[prefix + name].shape

    if isinstance(head, VQTHead):
        dim = head.dim
    elif isinstance(head, (CGP, ProtoBin)):
        dim = shape("prototype_vectors")[1]
    elif isinstance(head, ASRHead):
        dim = shape("upsample.weight")[0]
    elif isinstance(head, Head2Toe):
        if head.dim is None:
            raise ValueError("Build the Head2Toe head first (call it on features) or give it `dim`: "
                             "its weights do not tell the number of layers from their width.")
        dim = head.dim
    else:
        dim = shape("fc.weight")[1]
    if isinstance(head, VQTHead):
        layers = head.depth
    elif isinstance(head, (LayerMixedLinear, CGP, ASRHead)):
        layers = shape("block_attention")[0]
    elif isinstance(head, Head2Toe):
        layers = shape("fc.weight")[1] // dim
    else:
        layers = 1  # heads on the last layer only
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
