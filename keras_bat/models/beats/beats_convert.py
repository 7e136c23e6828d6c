"""Official BEATs checkpoints (`{"model": state_dict, "cfg": {...}}`) -> BEATsBackbone."""

import numpy as np

from keras_bat.convert.checkpoints import read_state_dict
from keras_bat.convert.mapping import (Param, assign_parameters, choose_prefix, count_blocks, find_prefix, layer_norm,
                                       linear)

# BEATs keeps one relative-bias table, layer 0's; the state dict repeats it under every layer.
_BIAS_TABLE = "encoder.layers.{}.self_attn.relative_attention_bias.weight"


def beats_parameters(backbone):
    """Maps every official BEATs parameter name to its `BEATsBackbone` variable."""
    e, p = backbone.embed_dim, backbone.patch_size
    params = {
        "patch_embedding.weight": Param(
            backbone.patch_embed.proj.kernel,
            to_keras=lambda w: np.reshape(w, (e, p * p)).T,
            to_official=lambda k: np.reshape(k.T, (e, 1, p, p))),
        **layer_norm("layer_norm", backbone.extract_norm),
        **linear("post_extract_proj", backbone.post_extract_proj),
        "encoder.pos_conv.0.weight_g": Param(backbone.pos_conv.weight_g),
        "encoder.pos_conv.0.weight_v": Param(backbone.pos_conv.weight_v),
        "encoder.pos_conv.0.bias": Param(backbone.pos_conv.bias),
        **layer_norm("encoder.layer_norm", backbone.encoder_norm),
        _BIAS_TABLE.format(0): Param(backbone.relative_bias.table),
    }
    for i, block in enumerate(backbone.blocks):
        name, attn = f"encoder.layers.{i}", block.self_attn
        for projection in ("q_proj", "k_proj", "v_proj", "out_proj", "grep_linear"):
            params.update(linear(f"{name}.self_attn.{projection}", getattr(attn, projection)))
        params[f"{name}.self_attn.grep_a"] = Param(attn.grep_a)
        params.update(layer_norm(f"{name}.self_attn_layer_norm", block.self_attn_layer_norm))
        params.update(linear(f"{name}.fc1", block.fc1))
        params.update(linear(f"{name}.fc2", block.fc2))
        params.update(layer_norm(f"{name}.final_layer_norm", block.final_layer_norm))
    return params


def load_beats_weights(backbone, source, prefix=None):
    """Loads an official BEATs checkpoint into a `BEATsBackbone`.

    The relative-bias table is layer 0's; the copies the state dict holds
    under the other layers' names must equal it. Keys the encoder does not
    use (the tokenizer's `predictor.*`, ...) are ignored; missing or
    mis-shaped ones are listed in one error and nothing is assigned.

    Args:
        backbone: a `keras_bat.models.BEATsBackbone`.
        source: the official checkpoint (`.pt` holding `{"model": ..., "cfg":
            ...}`), a `.safetensors` file, a folder with `model.safetensors`,
            or a dict.
        prefix: str or `None`, the prefix of the encoder's keys; `None` tries
            the usual ones.

    Returns:
        The backbone, for chaining.
    """
    state = read_state_dict(source)
    expected = beats_parameters(backbone)
    if prefix is None:
        prefix = choose_prefix(state, expected)
    table = state.get(prefix + _BIAS_TABLE.format(0))
    copies = {_BIAS_TABLE.format(i): table for i in range(1, backbone.depth)
              if table is not None and prefix + _BIAS_TABLE.format(i) in state}
    assign_parameters(expected, state, prefix, True, "BEATsBackbone", constants=copies)
    return backbone


def beats_checkpoint_config(state):
    """`(constructor arguments, prefix)` of a BEATs encoder in an official state dict, read off
    its weights, or `None` when it holds none."""
    prefix = find_prefix(state, "encoder.layers.0.self_attn.grep_a")
    if prefix is None or prefix + "patch_embedding.weight" not in state:
        return None
    dim = state[prefix + "post_extract_proj.weight"].shape[0]
    conv = state[prefix + "encoder.pos_conv.0.weight_v"]  # dim, dim / groups, kernel
    config = {"dim": dim, "depth": count_blocks(state, prefix, "encoder.layers.{}"), "num_heads": max(dim // 64, 1),
              "ffn_dim": state[prefix + "encoder.layers.0.fc1.weight"].shape[0],
              "embed_dim": state[prefix + "patch_embedding.weight"].shape[0],
              "conv_pos": conv.shape[2], "conv_pos_groups": dim // conv.shape[1],
              "num_buckets": state[prefix + _BIAS_TABLE.format(0)].shape[0]}
    return config, prefix
