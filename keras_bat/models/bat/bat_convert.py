"""Official BAT checkpoints (PyTorch state dicts) <-> BATBackbone, MaskedDecoder and
BATPretrainer weights.

The official parameter names (`patch_embed.proj.weight`, `blocks.3.attn.qkv.bias`,
...) map one to one onto BATBackbone variables; the patch convolution becomes a
matrix over flattened `(time, freq)` patches.
"""

import os

import numpy as np

from keras_bat.convert.checkpoints import load_torch_checkpoint, read_preset_config, read_state_dict
from keras_bat.convert.mapping import (KNOWN_PREFIXES, Param, assign_parameters, choose_prefix, count_blocks,
                                       find_prefix, layer_norm, linear, position_table)
from keras_bat.errors import UsageError

_ARCHITECTURE_KEYS = ("dim", "depth", "num_heads", "mlp_ratio", "patch_size", "num_mels",
                      "chunk_time_patches", "use_gate", "qkv_bias", "pre_norm", "norm_first")


def backbone_parameters(backbone):
    """Maps every official encoder parameter name to its BATBackbone variable.

    Args:
        backbone: a built `keras_bat.models.BATBackbone`.

    Returns:
        Dict `official name -> Param`.
    """
    dim, p = backbone.dim, backbone.patch_size
    tokens = backbone.chunk_tokens
    params = {
        "patch_embed.proj.weight": Param(
            backbone.patch_embed.proj.kernel,
            to_keras=lambda w: np.reshape(w, (dim, p * p)).T,
            to_official=lambda k: np.reshape(k.T, (dim, 1, p, p))),
        "patch_embed.proj.bias": Param(backbone.patch_embed.proj.bias),
        "cls_token": Param(tokens.cls_token),
        "pos_embed": position_table(tokens.pos_embed),
    }
    if backbone.pre_norm is not None:
        params.update(layer_norm("pre_norm", backbone.pre_norm))
    for i, block in enumerate(backbone.blocks):
        params.update(block_parameters(f"blocks.{i}", block))
    return params


def block_parameters(name, block):
    params = {}
    params.update(layer_norm(f"{name}.norm1", block.norm1))
    params.update(layer_norm(f"{name}.norm2", block.norm2))
    params.update(linear(f"{name}.attn.qkv", block.attn.qkv))
    if block.attn.gate is not None:
        params.update(linear(f"{name}.attn.gate", block.attn.gate))
    params.update(linear(f"{name}.attn.proj", block.attn.proj))
    params.update(linear(f"{name}.mlp.fc1", block.fc1))
    params.update(linear(f"{name}.mlp.fc2", block.fc2))
    return params


def check_preset_config(backbone, directory):
    found = read_preset_config(directory)
    if found is None:
        return
    config = found[1]
    mine = backbone.get_config()
    differences = [f"{key}: checkpoint {config[key]!r} vs model {mine[key]!r}"
                   for key in _ARCHITECTURE_KEYS if key in config and config[key] != mine[key]]
    if differences:
        raise UsageError(
            f"The checkpoint in {directory!r} was made for another architecture:\n  "
            + "\n  ".join(differences))


def load_official_weights(backbone, source, prefix=None, checkpoint_key=None, skip_unexpected=False):
    """Loads official BAT encoder weights into a `BATBackbone`.

    Every backbone variable must be found with the right shape; otherwise
    nothing is assigned and the error lists each offending key and shape.

    Args:
        backbone: a `keras_bat.models.BATBackbone`.
        source: a `.safetensors` file, an official PyTorch checkpoint (`.pt`;
            the official pretraining checkpoint holds `encoder`, the student,
            and `ema_encoder`, the teacher), a folder with `model.safetensors`
            (and optionally `config.json`, checked against the backbone), or a
            dict of arrays.
        prefix: str or `None`, the prefix of the encoder's keys (e.g.
            `"student.encoder."`); `None` tries the usual ones.
        checkpoint_key: str or `None`, nested entry to read, e.g.
            `"ema_encoder"`; see `read_state_dict`.
        skip_unexpected: bool, ignore keys under the prefix that the backbone
            does not have (e.g. a finetuned model's `head.*`). Defaults to
            `False`, which raises.

    Returns:
        The backbone, for chaining.
    """
    if not isinstance(source, dict) and os.path.isdir(os.fspath(source)):
        check_preset_config(backbone, os.fspath(source))
    state = read_state_dict(source, checkpoint_key)
    expected = backbone_parameters(backbone)
    if prefix is None:
        prefix = choose_prefix(state, expected)
    time_patches = checkpoint_time_patches(state, backbone.num_mels // backbone.patch_size, prefix)
    if time_patches not in (None, backbone.chunk_time_patches):
        raise UsageError(
            f"The checkpoint's position table is for a {time_patches} x "
            f"{backbone.num_mels // backbone.patch_size} patch grid ({time_patches * backbone.patch_size} frames: "
            f"pretrained on clips of that length), this backbone's for {backbone.chunk_time_patches} time "
            f"patches. Build the backbone with chunk_time_patches={time_patches}; it then encodes longer "
            "inputs in chunks of that length.")
    assign_parameters(expected, state, prefix, skip_unexpected, "BATBackbone")
    return backbone


def checkpoint_time_patches(state, freq_patches=8, prefix=None):
    """Time patches of the position grid an encoder checkpoint was made for:
    64 for BAT's 1024-frame table, 16 for an official pretraining on 2.56 s
    clips; `None` when `state` holds no `pos_embed` that tells.

    Args:
        state: dict `name -> array` (see `read_state_dict`).
        freq_patches: int, frequency patches of the grid (8 for 128 mels).
        prefix: str, prefix of the encoder's keys; `None` tries the usual ones.
    """
    if prefix is None:
        prefix = next((p for p in KNOWN_PREFIXES if p + "pos_embed" in state and p + "cls_token" in state), "")
    return table_time_patches(state.get(prefix + "pos_embed"), freq_patches)


def table_time_patches(table, freq_patches=8):
    """Time patches of an official position table `(1, time * freq, dim)`; `None` for no such table."""
    if table is None or table.ndim != 3 or table.shape[1] % freq_patches:
        return None
    return table.shape[1] // freq_patches


def decoder_parameters(decoder):
    """Maps the official decoder's parameter names to a `MaskedDecoder`'s variables."""
    params = {
        "mask_token": Param(decoder.mask_token),
        "pos_embed": position_table(decoder.pos_embed),
    }
    if decoder.in_proj is not None:
        params.update(linear("in_proj", decoder.in_proj))
    for i, block in enumerate(decoder.blocks):
        params.update(block_parameters(f"blocks.{i}", block))
    params.update(linear("out_proj", decoder.out_proj))
    return params


def load_official_pretrainer_weights(pretrainer, source):
    """Loads the official pretraining checkpoint into a `BATPretrainer`.

    Args:
        pretrainer: a `keras_bat.models.BATPretrainer`.
        source: the official checkpoint (`.pt` with `encoder`, `decoder`,
            `ema_encoder`), or a dict / safetensors file with `encoder.*`,
            `decoder.*` and optionally `ema_encoder.*` keys.

    Returns:
        The number of optimizer steps recorded in the checkpoint (or `None`).
    """
    if isinstance(source, dict) or str(source).endswith(".safetensors"):
        state = read_state_dict(source)
        parts = {name: {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
                 for name in ("encoder", "decoder", "ema_encoder")}
        steps = None
    else:
        checkpoint = load_torch_checkpoint(os.fspath(source))
        parts = {name: read_state_dict(checkpoint, checkpoint_key=name)
                 for name in ("encoder", "decoder", "ema_encoder") if name in checkpoint}
        steps = checkpoint.get("optimized_steps")
    for name in ("encoder", "decoder"):
        if not parts.get(name):
            raise UsageError(f"The pretraining checkpoint has no {name!r} weights.")
    assign_parameters(backbone_parameters(pretrainer.student), parts["encoder"], "", False, "student encoder")
    assign_parameters(decoder_parameters(pretrainer.decoder), parts["decoder"], "", False, "MaskedDecoder")
    teacher = parts.get("ema_encoder") or parts["encoder"]
    assign_parameters(backbone_parameters(pretrainer.teacher), teacher, "", False, "teacher encoder")
    return steps


def block_settings(state, prefix):
    """Width, depth, heads (width / 64, the ViT convention: weights do not tell) and MLP ratio of
    the blocks `blocks.{i}.*` under `prefix` (BAT's names, which EAT and SSLAM share)."""
    dim = state[prefix + "blocks.0.attn.qkv.weight"].shape[1]
    return {"dim": dim, "depth": count_blocks(state, prefix, "blocks.{}"), "num_heads": max(dim // 64, 1),
            "mlp_ratio": state[prefix + "blocks.0.mlp.fc1.weight"].shape[0] / dim}


def bat_checkpoint_config(state):
    """`(constructor arguments, prefix)` of a BAT-layout encoder (gated or not) in an official
    state dict, read off its weights, or `None` when it holds none."""
    prefix = find_prefix(state, "blocks.0.attn.qkv.weight")
    if prefix is None or prefix + "patch_embed.proj.weight" not in state:
        return None
    config = {**block_settings(state, prefix),
              "use_gate": prefix + "blocks.0.attn.gate.weight" in state,
              "qkv_bias": prefix + "blocks.0.attn.qkv.bias" in state,
              "pre_norm": prefix + "pre_norm.weight" in state}
    time_patches = checkpoint_time_patches(state, 8, prefix)
    if time_patches:
        config["chunk_time_patches"] = time_patches
    return config, prefix
