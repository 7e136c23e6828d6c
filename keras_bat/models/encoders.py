"""The encoders a recipe names with `model.encoder`: each one's backbone class, the
constructor arguments that make it that encoder, its checkpoint loader and presets.
Each encoder family registers its own (`keras_bat/models/<family>/__init__.py`)."""

import inspect
import os
from typing import Callable, NamedTuple

from keras_bat.convert.checkpoints import CONFIG_FILE, WEIGHTS_FILE, checkpoint_shapes, read_state_dict
from keras_bat.convert.hub import download_preset, is_hub_uri
from keras_bat.errors import UsageError
from keras_bat.models.backbone import EncoderModel
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
            "encoder": name, "weights_loader": load_weights.__name__,
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


def encoder_of_source(source):
    """The registered encoder (`bat`, `eat`, `sslam`, `beats`, ...) that a preset name, a preset
    folder, an official release folder or a Hub URI of either holds (a URI is downloaded)."""
    source = os.fspath(source)
    for encoder in ENCODERS.values():
        if source in encoder.backbone_class.builtin_presets:
            return encoder.backbone_class.builtin_presets[source]["encoder"]
    folder = download_preset(source) if is_hub_uri(source) else source
    if os.path.isdir(folder):
        owner = own_config_class(folder)
        if owner is not None:
            return encoder_name(owner, owner.preset_config(folder))
        if os.path.isfile(os.path.join(folder, WEIGHTS_FILE)):  # the family named by the weights' names
            backbone_class, config = recognise_checkpoint(checkpoint_shapes(folder), source)
            return encoder_name(backbone_class, config)
    raise UsageError(f"{source!r} is neither a preset name ({', '.join(_preset_names())}), a preset folder nor "
                     "hf://owner/repo[/subfolder]: set model.encoder to name its encoder.")


def _preset_names():
    return sorted(name for encoder in ENCODERS.values() for name in encoder.backbone_class.builtin_presets)


def own_config_class(directory):
    """The backbone class whose constructor takes every entry of a preset directory's config
    (`EncoderModel.holds_own_config`), or `None`."""
    return next((e.backbone_class for e in ENCODERS.values() if e.backbone_class.holds_own_config(directory)), None)


def preset_directory_class(directory):
    """The backbone class of a preset directory written by `save_to_preset`."""
    config = EncoderModel.preset_config(directory)  # raises for a folder without config.json
    backbone_class = own_config_class(directory)
    if backbone_class is None:
        raise UsageError(f"{directory}/{CONFIG_FILE} fits no encoder's constructor: {sorted(config)}.")
    return backbone_class


def backbone_from_source(source, encoder=None, checkpoint_key=None, architecture="bat_base"):
    """A backbone from a preset name, a preset directory, or an official
    checkpoint file of `encoder` loaded into the `architecture` preset.

    Args:
        source: str, a built-in preset name (an architecture, random weights:
            it warns; or a published release, downloaded), a directory written
            by `save_to_preset`, a directory of an official release
            (`model.safetensors`; the encoder and its architecture are read off
            the weights), `hf://owner/repo[/subfolder]` of either kind, or a
            checkpoint file (`.pt`, `.safetensors`, ...).
        encoder: str or `None`, the checkpoint's encoder (`bat`, `eat`,
            `sslam`, `beats`); `None` takes the architecture's.
        checkpoint_key: str or `None`, the nested entry of the checkpoint.
        architecture: str, the preset (name or directory) whose architecture a
            checkpoint file is loaded into.
    """
    source = os.fspath(source)
    for candidate in ENCODERS.values():
        if source in candidate.backbone_class.builtin_presets:
            return candidate.backbone_class.from_preset(source)
    if is_hub_uri(source):
        source = download_preset(source)
    if os.path.isdir(source):
        owner = own_config_class(source)
        if owner is not None:
            return owner.from_preset(source)
        if os.path.isfile(os.path.join(source, WEIGHTS_FILE)):
            return backbone_of_checkpoint(read_state_dict(source), source)
    if os.path.isdir(source) and os.path.isfile(os.path.join(source, CONFIG_FILE)):
        return preset_directory_class(source).from_preset(source)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source!r} is neither a preset name, a preset directory (with {CONFIG_FILE}) "
                                "nor a checkpoint file.")
    if os.path.isdir(architecture):
        backbone_class = preset_directory_class(architecture)
    else:
        backbone_class = next((e.backbone_class for e in ENCODERS.values()
                               if architecture in e.backbone_class.builtin_presets), None)
    if backbone_class is None:
        raise UsageError(f"Unknown architecture {architecture!r}: expected a preset name or a preset directory.")
    name = encoder or encoder_name(backbone_class, backbone_class.preset_config(architecture))
    return build_encoder(name, architecture, read_state_dict(source, checkpoint_key))


def recognise_checkpoint(state, source="the checkpoint"):
    """`(backbone class, constructor arguments)` of the official encoder in a state dict, read off
    its weights by each registered class's `recognise_checkpoint`, whatever prefix wraps its keys."""
    classes = list(dict.fromkeys(encoder.backbone_class for encoder in ENCODERS.values()))
    for backbone_class in classes:
        found = backbone_class.recognise_checkpoint(state)
        if found is not None:
            return backbone_class, found[0]
    raise UsageError(f"{source} holds no encoder keras-bat knows ({', '.join(c.__name__ for c in classes)}): "
                     f"no key marks one of their layouts (keys such as {sorted(state)[:3]}).")


def backbone_of_checkpoint(state, source="the checkpoint"):
    """The backbone of an official state dict whose family and architecture are read off its weights
    (`recognise_checkpoint`), whatever prefix wraps its keys."""
    return recognise_checkpoint(state, source)[0].from_checkpoint(state, source=source)


def load_model_source(source, **backbone_options):
    """What `source` names: the `AudioClassifier` of a `save_to_preset` folder, the model
    of a `.keras` file, or a backbone (a preset name, a preset folder or a checkpoint file,
    with `backbone_options` as in `backbone_from_source`)."""
    import keras

    from keras_bat.models.audio_classifier import AudioClassifier, is_task_preset

    source = os.fspath(source)
    if is_hub_uri(source):
        source = download_preset(source)
    if os.path.isdir(source) and is_task_preset(source):
        return AudioClassifier.from_preset(source)
    if source.endswith(".keras"):
        return keras.saving.load_model(source, compile=False)
    return backbone_from_source(source, **backbone_options)


def _default(backbone_class, key):
    parameter = inspect.signature(backbone_class.__init__).parameters.get(key)
    return None if parameter is None else parameter.default
