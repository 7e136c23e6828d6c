"""Reading and writing state dicts: official PyTorch checkpoints, safetensors files and
preset folders, as flat `{name: float32 NumPy array}` dicts; and the JSON files of a preset folder."""

import json
import os
from typing import NamedTuple

import keras
import numpy as np

from keras_bat.errors import UsageError

WEIGHTS_FILE = "model.safetensors"  # official names: releases, `export_official`, earlier presets
NATIVE_WEIGHTS_FILE = "model.weights.h5"  # Keras' weights file: what `save_to_preset` writes
CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
# Nested entries of official checkpoints that hold an encoder state dict.
ENCODER_ENTRIES = ("encoder", "model", "state_dict")


def read_preset_config(directory):
    """`(class name or None, constructor arguments)` of a preset folder's `config.json`, or `None`
    without one. Reads keras-hub's layout (`{"class_name", "config", ...}`, as `save_to_preset`
    writes) and the flat constructor arguments of earlier keras-bat presets; another library's
    config (e.g. a transformers `config.json` beside an official release) comes back as it is."""
    import json

    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        config = json.load(f)
    if isinstance(config, dict) and isinstance(config.get("config"), dict) and "class_name" in config:
        return config["class_name"], config["config"]
    return None, config


def _to_numpy(value):
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):  # torch.Tensor, possibly bfloat16
        return value.detach().cpu().float().numpy()
    return np.asarray(value)


def load_torch_checkpoint(path):
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
        raise UsageError(f"Could not read {path!r} as a PyTorch checkpoint: it is not a file written by torch.save "
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
                raise UsageError(f"Could not read the safetensors file {path!r}: {error}") from error
        else:
            state = load_torch_checkpoint(path)
    if not isinstance(state, dict):
        raise UsageError(f"Expected a state dict (a mapping of names to arrays); got {type(state).__name__}.")
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


class TensorShape(NamedTuple):
    """A checkpoint entry's shape, read without its values: what recognising an encoder needs."""

    shape: tuple

    @property
    def ndim(self):
        return len(self.shape)


def checkpoint_shapes(source):
    """`{name: TensorShape}` of a checkpoint: a `.safetensors` file (or a folder holding
    `model.safetensors`) is read from its header alone, without loading a tensor; other
    formats are read whole (`read_state_dict`)."""
    path = os.fspath(source)
    if os.path.isdir(path):
        path = os.path.join(path, WEIGHTS_FILE)
    if not path.endswith(".safetensors"):
        return {name: TensorShape(tuple(value.shape)) for name, value in read_state_dict(path).items()}
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint file at {path!r}.")
    from safetensors import safe_open

    try:
        with safe_open(path, framework="numpy") as file:
            return {name: TensorShape(tuple(file.get_slice(name).get_shape())) for name in file.keys()}
    except Exception as error:
        raise UsageError(f"Could not read the safetensors file {path!r}: {error}") from error


def save_official_weights(model, path, parameters=None):
    """Writes a model's weights to `path` as safetensors with official names.

    Args:
        model: an encoder (or any model with `official_parameters()`).
        path: the `.safetensors` file to write.
        parameters: optional dict `official name -> Param` (default:
            `model.official_parameters()`).
    """
    from safetensors.numpy import save_file

    tensors = {}
    for name, param in (parameters or model.official_parameters()).items():
        # (a LoRA-adapted kernel is a tensor, the kernel with its low-rank update merged)
        value = np.asarray(keras.ops.convert_to_numpy(param.variable), dtype="float32")
        # C order matters: save_file writes the raw buffer and ignores strides.
        tensors[name] = np.array(param.to_official(value), order="C")
    save_file(tensors, os.fspath(path))


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def write_preset_metadata(directory, model, **extra):
    """`metadata.json` of a preset folder: what wrote it (keras-bat, Keras, the backend), when, and
    the model's parameter count, with `extra` entries."""
    import datetime
    import importlib.metadata

    try:
        keras_bat_version = importlib.metadata.version("keras-bat")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        keras_bat_version = None
    write_json(os.path.join(directory, METADATA_FILE), {
        "keras_bat_version": keras_bat_version, "keras_version": keras.__version__,
        "backend": keras.backend.backend(), "class_name": type(model).__name__,
        "parameter_count": int(model.count_params()) if model.built else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **extra})
