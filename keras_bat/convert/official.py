"""Official BAT checkpoints (PyTorch state dicts) <-> Keras weights.

The official parameter names (`patch_embed.proj.weight`, `blocks.3.attn.qkv.bias`,
...) map one to one onto BATBackbone variables; PyTorch's `Linear` weights are
`(out, in)` and are transposed, the patch convolution becomes a matrix over
flattened `(time, freq)` patches.
"""

import json
import os

import numpy as np

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# Prefixes tried, in order, when a checkpoint's keys are not bare encoder names.
KNOWN_PREFIXES = ("", "encoder.", "student.encoder.", "module.encoder.", "model.encoder.",
                  "backbone.", "model.", "module.")
# Nested entries of official checkpoints that hold an encoder state dict.
ENCODER_ENTRIES = ("encoder", "model", "state_dict")
_ARCHITECTURE_KEYS = ("dim", "depth", "num_heads", "mlp_ratio", "patch_size", "num_mels",
                      "chunk_time_patches", "use_gate", "qkv_bias", "pre_norm", "norm_first")


class _Param:
    """One Keras variable filled from one or more official parameters.

    Args:
        variable: the Keras variable.
        to_keras: converts the official array(s) to the variable's layout.
        to_official: converts the variable back (a single source only).
        extra_sources: further official names whose arrays `to_keras` takes
            after the main one (e.g. PyTorch's second LSTM bias).
    """

    def __init__(self, variable, to_keras=None, to_official=None, extra_sources=()):
        self.variable = variable
        self.to_keras = to_keras or (lambda x: x)
        self.to_official = to_official or (lambda x: x)
        self.extra_sources = tuple(extra_sources)

    def official_shape(self):
        return self.to_official(np.zeros(self.variable.shape, "float32")).shape


def _linear(name, dense):
    params = {f"{name}.weight": _Param(dense.kernel, np.transpose, np.transpose)}
    if dense.use_bias:
        params[f"{name}.bias"] = _Param(dense.bias)
    return params


def _position_table(variable):
    # Official tables carry a leading batch axis: (1, N, D).
    return _Param(variable, to_keras=lambda w: w[0], to_official=lambda w: w[None])


def _layer_norm(name, norm):
    return {f"{name}.weight": _Param(norm.gamma), f"{name}.bias": _Param(norm.beta)}


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


def backbone_parameters(backbone):
    """Maps every official encoder parameter name to its BATBackbone variable.

    Args:
        backbone: a built `keras_bat.models.BATBackbone`.

    Returns:
        Dict `official name -> _Param`.
    """
    dim, p = backbone.dim, backbone.patch_size
    tokens = backbone.chunk_tokens
    params = {
        "patch_embed.proj.weight": _Param(
            backbone.patch_embed.proj.kernel,
            to_keras=lambda w: np.reshape(w, (dim, p * p)).T,
            to_official=lambda k: np.reshape(k.T, (dim, 1, p, p))),
        "patch_embed.proj.bias": _Param(backbone.patch_embed.proj.bias),
        "cls_token": _Param(tokens.cls_token),
        "pos_embed": _position_table(tokens.pos_embed),
    }
    if backbone.pre_norm is not None:
        params.update(_layer_norm("pre_norm", backbone.pre_norm))
    for i, block in enumerate(backbone.blocks):
        params.update(_block_parameters(f"blocks.{i}", block))
    return params


def _block_parameters(name, block):
    params = {}
    params.update(_layer_norm(f"{name}.norm1", block.norm1))
    params.update(_layer_norm(f"{name}.norm2", block.norm2))
    params.update(_linear(f"{name}.attn.qkv", block.attn.qkv))
    if block.attn.gate is not None:
        params.update(_linear(f"{name}.attn.gate", block.attn.gate))
    params.update(_linear(f"{name}.attn.proj", block.attn.proj))
    params.update(_linear(f"{name}.mlp.fc1", block.fc1))
    params.update(_linear(f"{name}.mlp.fc2", block.fc2))
    return params


# --- Reading checkpoints ---------------------------------------------------------


def _to_numpy(value):
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):  # torch.Tensor, possibly bfloat16
        return value.detach().cpu().float().numpy()
    return np.asarray(value)


def _load_torch(path):
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"Reading the PyTorch checkpoint {path!r} needs torch: `pip install torch`, or "
            "convert it to safetensors first.") from error
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        # torch's own messages say little here ("101", "pop from empty list"): name the file and what it is not.
        detail = " ".join(str(error).split())[:200]
        raise ValueError(f"Could not read {path!r} as a PyTorch checkpoint: it is not a file written by torch.save "
                         f"(or it is damaged); expected an official .pt / .safetensors checkpoint "
                         f"[{type(error).__name__}: {detail}]") from error


def read_state_dict(source, checkpoint_key=None):
    """Reads a flat `{name: array}` state dict from a file, folder or dict.

    Args:
        source: a dict of arrays or tensors; a `.safetensors` file; a PyTorch
            checkpoint (`.pt`, `.pth`, `.ckpt`, `.bin`); or a folder holding
            `model.safetensors`.
        checkpoint_key: str or `None`, the entry of a nested checkpoint to
            read, e.g. `"ema_encoder"` (the EMA teacher of the official
            pretraining checkpoint). `None` picks the first of `encoder`,
            `model`, `state_dict` that exists, else the top level.

    Returns:
        Dict `name -> float32 NumPy array`.
    """
    if isinstance(source, dict):
        state = source
    else:
        path = os.fspath(source)
        if os.path.isdir(path):
            path = os.path.join(path, WEIGHTS_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No checkpoint file at {path!r}.")
        if path.endswith(".safetensors"):
            from safetensors.numpy import load_file

            try:
                state = load_file(path)
            except Exception as error:
                raise ValueError(f"Could not read the safetensors file {path!r}: {error}") from error
        else:
            state = _load_torch(path)
    if not isinstance(state, dict):
        raise ValueError(f"Expected a state dict (a mapping of names to arrays); got {type(state).__name__}.")
    if checkpoint_key is not None:
        if checkpoint_key not in state:
            raise KeyError(
                f"The checkpoint has no entry {checkpoint_key!r}; its entries are {sorted(state)}.")
        state = state[checkpoint_key]
    else:
        for entry in ENCODER_ENTRIES:
            if isinstance(state.get(entry), dict):
                state = state[entry]
                break
    return {name: _to_numpy(value) for name, value in state.items() if not isinstance(value, dict)
            and hasattr(value, "shape")}


def _choose_prefix(state, expected):
    best, best_hits = None, -1
    for prefix in KNOWN_PREFIXES:
        hits = sum(prefix + name in state for name in expected)
        if hits == len(expected):
            return prefix
        if hits > best_hits:
            best, best_hits = prefix, hits
    return best


def _check_config(backbone, directory):
    config_path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(config_path):
        return
    with open(config_path) as f:
        config = json.load(f)
    mine = backbone.get_config()
    differences = [f"{key}: checkpoint {config[key]!r} vs model {mine[key]!r}"
                   for key in _ARCHITECTURE_KEYS if key in config and config[key] != mine[key]]
    if differences:
        raise ValueError(
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
        _check_config(backbone, os.fspath(source))
    state = read_state_dict(source, checkpoint_key)
    expected = backbone_parameters(backbone)
    if prefix is None:
        prefix = _choose_prefix(state, expected)
    time_patches = checkpoint_time_patches(state, backbone.num_mels // backbone.patch_size, prefix)
    if time_patches not in (None, backbone.chunk_time_patches):
        raise ValueError(
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
    table = state.get(prefix + "pos_embed")
    if table is None or table.ndim != 3 or table.shape[1] % freq_patches:
        return None
    return table.shape[1] // freq_patches


def assign_parameters(expected, state, prefix, skip_unexpected, model_name, constants=None):
    """Checks a state dict against `expected` parameters, then assigns them all.

    Args:
        expected: dict `official name -> _Param`.
        state: dict `name -> array`.
        prefix: str, prefix of the official names in `state`.
        skip_unexpected: bool, ignore keys under `prefix` that nothing uses.
        model_name: str, named in the error.
        constants: optional dict `official name -> value` of buffers that are
            not weights but must hold this value (e.g. a scale fixed by the
            configuration).

    Raises:
        ValueError: listing every missing, unexpected or mis-shaped key, and
            every constant that disagrees; nothing is assigned then.
    """
    constants = constants or {}
    used = set(constants)
    mismatched, disagreeing, missing = [], [], []
    for name, param in expected.items():
        for source in (name,) + param.extra_sources:
            used.add(source)
            key = prefix + source
            if key not in state:
                missing.append(source)
            elif tuple(state[key].shape) != tuple(param.official_shape()):
                mismatched.append(f"{key!r}: checkpoint {tuple(state[key].shape)} vs model "
                                  f"{tuple(param.official_shape())}")
    for name, value in constants.items():
        key = prefix + name
        if key not in state:
            missing.append(name)
        elif not np.allclose(state[key], value, rtol=1e-6):
            disagreeing.append(f"{key!r} is {state[key]!r} in the checkpoint but {value!r} for this model")
    unexpected = sorted(key for key in state if key.startswith(prefix) and key[len(prefix):] not in used)
    if skip_unexpected:
        unexpected = []
    kinds = [(f"missing keys (prefix {prefix!r})", [repr(name) for name in missing]),
             ("shape mismatches", mismatched), ("constants that disagree", disagreeing),
             ("unexpected keys (pass skip_unexpected=True to ignore them)", [repr(key) for key in unexpected])]
    kinds = [(kind, items) for kind, items in kinds if items]
    if kinds:
        # First line: what a command line shows; then every problem, one per line.
        summary = "; ".join(f"{len(items)} {kind}, e.g. {items[0]}" for kind, items in kinds)
        details = [f"{kind}: {item}" for kind, items in kinds for item in items]
        raise ValueError(f"The checkpoint does not fit this {model_name}: {summary}\n  " + "\n  ".join(details))
    for name, param in expected.items():
        arrays = [state[prefix + source] for source in (name,) + param.extra_sources]
        value = np.asarray(param.to_keras(*arrays))
        param.variable.assign(value.astype(param.variable.dtype))


def save_official_weights(backbone, path, parameters=None):
    """Writes the backbone's weights to `path` as safetensors with official names.

    Args:
        backbone: the backbone.
        path: the `.safetensors` file to write.
        parameters: optional dict `official name -> _Param` (default:
            `backbone_parameters(backbone)`, BAT's names).
    """
    from safetensors.numpy import save_file

    tensors = {}
    for name, param in (parameters or backbone_parameters(backbone)).items():
        value = np.asarray(param.variable.numpy(), dtype="float32")
        # C order matters: save_file writes the raw buffer and ignores strides.
        tensors[name] = np.array(param.to_official(value), order="C")
    save_file(tensors, os.fspath(path))


def decoder_parameters(decoder):
    """Maps the official decoder's parameter names to a `MaskedDecoder`'s variables."""
    params = {
        "mask_token": _Param(decoder.mask_token),
        "pos_embed": _position_table(decoder.pos_embed),
    }
    if decoder.in_proj is not None:
        params.update(_linear("in_proj", decoder.in_proj))
    for i, block in enumerate(decoder.blocks):
        params.update(_block_parameters(f"blocks.{i}", block))
    params.update(_linear("out_proj", decoder.out_proj))
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
        checkpoint = _load_torch(os.fspath(source))
        parts = {name: read_state_dict(checkpoint, checkpoint_key=name)
                 for name in ("encoder", "decoder", "ema_encoder") if name in checkpoint}
        steps = checkpoint.get("optimized_steps")
    for name in ("encoder", "decoder"):
        if not parts.get(name):
            raise ValueError(f"The pretraining checkpoint has no {name!r} weights.")
    assign_parameters(backbone_parameters(pretrainer.student), parts["encoder"], "", False, "student encoder")
    assign_parameters(decoder_parameters(pretrainer.decoder), parts["decoder"], "", False, "MaskedDecoder")
    teacher = parts.get("ema_encoder") or parts["encoder"]
    assign_parameters(backbone_parameters(pretrainer.teacher), teacher, "", False, "teacher encoder")
    return steps
