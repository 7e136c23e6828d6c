"""The encoders a recipe names with `model.encoder`: each one's backbone class, the
constructor arguments that make it that encoder, its checkpoint loader and presets.
Each encoder family registers its own (`keras_bat/models/<family>/__init__.py`); where a
model comes from is resolved in `keras_bat.models.presets`."""

import inspect
import os
from typing import Callable, NamedTuple

from keras_bat.convert.checkpoints import read_state_dict
from keras_bat.errors import UsageError
from keras_bat.registry import Registry


class Encoder(NamedTuple):
    backbone_class: type
    fixed_arguments: dict  # constructor arguments that define this encoder
    load_weights: Callable  # (backbone, checkpoint) -> backbone


ENCODERS = Registry("encoder")


def register_encoder(name, backbone_class, load_weights, fixed_arguments=None, presets=None):
    """Registers the encoder `name` (a recipe's `model.encoder`).

    Args:
        name: str, the encoder's name.
        backbone_class: the `EncoderModel` subclass that builds it.
        load_weights: `(backbone, checkpoint) -> backbone`, the loader of its
            official checkpoints.
        fixed_arguments: dict, constructor arguments that make the class this
            encoder (e.g. `{"use_gate": False, "frontend": "eat"}`).
        presets: dict `preset name -> {"description", "config"}` (and `"uri"`
            for a release published with weights); the class's `from_preset`
            builds them with the fixed arguments added.
    """
    fixed_arguments = dict(fixed_arguments or {})
    ENCODERS.register(name, Encoder(backbone_class, fixed_arguments, load_weights))
    # Each class keeps its own table (not its base class's).
    backbone_class.builtin_presets = dict(backbone_class.__dict__.get("builtin_presets", {}))
    for preset, entry in (presets or {}).items():
        backbone_class.builtin_presets[preset] = {
            "description": entry["description"], "config": {**entry["config"], **fixed_arguments},
            "encoder": name, "weights_loader": f"{load_weights.__module__}.{load_weights.__name__}",
            **({"uri": entry["uri"]} if "uri" in entry else {})}


def get_encoder(name):
    """The `Encoder` entry of `name` (`bat`, `eat`, `sslam`, `beats` or one registered since)."""
    return ENCODERS[name]


def build_encoder(name, spec, weights=None, checkpoint_key=None, **overrides):
    """The backbone of encoder `name` (`bat`, `eat`, `sslam`, `beats`) from a preset name,
    preset directory or dict of constructor arguments, with the checkpoint `weights` (a
    file, folder or state dict; `checkpoint_key` its nested entry) loaded by the encoder's
    loader; `overrides` replace constructor arguments."""
    encoder = get_encoder(name)
    overrides = {**encoder.fixed_arguments, **overrides}
    # A preset directory without a nested entry goes to the loader as it is (it checks the
    # directory's config.json); anything else is read once, here.
    if weights and not isinstance(weights, dict) and (checkpoint_key or not os.path.isdir(weights)):
        weights = read_state_dict(weights, checkpoint_key)
    if isinstance(weights, dict):
        # E.g. a BAT checkpoint pretrained on short clips carries the position table
        # of its own patch grid: the backbone is built for that grid.
        config = dict(spec) if isinstance(spec, dict) else encoder.backbone_class.preset_config(spec)
        overrides.update(encoder.backbone_class.arguments_for_checkpoint(weights, config))
    if isinstance(spec, dict):
        backbone = encoder.backbone_class(**{**spec, **overrides})
    else:
        backbone = encoder.backbone_class.from_preset(spec, load_weights=not weights, **overrides)
    if weights:
        encoder.load_weights(backbone, weights)
    return backbone


def encoder_name(backbone_class, config):
    """The encoder (`bat`, `eat`, `sslam`, `beats`, ...) a backbone class and config make: of
    those the config fits, the one with the most fixed arguments (EAT before plain BAT)."""
    fitting = [(len(encoder.fixed_arguments), name) for name, encoder in ENCODERS.items()
               if encoder.backbone_class is backbone_class and all(
                   config.get(key, _default(backbone_class, key)) == value
                   for key, value in encoder.fixed_arguments.items())]
    if not fitting:
        raise UsageError(f"No encoder matches a {backbone_class.__name__} with config {config}.")
    return max(fitting)[1]


def _default(backbone_class, key):
    parameter = inspect.signature(backbone_class.__init__).parameters.get(key)
    return None if parameter is None else parameter.default
