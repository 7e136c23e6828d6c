"""Where a model comes from: every name, folder, file and Hub URI keras-bat loads is resolved
here, once (`resolve`): a Hub URI is downloaded once per process, and a folder's format is
read from its declared config or, for an official release, from its weights' names and
shapes (the safetensors header) without loading a tensor. The loaders below and
`EncoderModel.from_preset` act on what `resolve` found.

The kinds of source:
- `builtin`: a preset name a family registered (an architecture, or a published release);
- `preset`: a folder written by `EncoderModel.save_to_preset` (its `config.json` names the class);
- `release`: an official release folder (`model.safetensors`, no keras-bat config);
- `task`: a folder written by `AudioClassifier.save_to_preset` (its backbone's preset files
  beside the task's: as an encoder source, the backbone);
- `keras_file`: a `.keras` file;
- `checkpoint`: an official checkpoint file (`.pt`, `.safetensors`, ...), loaded into an
  architecture the caller names.
"""

import os
from typing import NamedTuple, Optional

from keras_bat.convert.checkpoints import CONFIG_FILE, WEIGHTS_FILE, checkpoint_shapes, read_state_dict
from keras_bat.convert.hub import download_preset, is_hub_uri
from keras_bat.errors import UsageError
from keras_bat.models.audio_classifier import AudioClassifier, is_task_preset
from keras_bat.models.encoders import ENCODERS, build_encoder, encoder_name

class Source(NamedTuple):
    source: str  # as the caller gave it
    kind: str  # builtin, preset, release, task, keras_file or checkpoint
    location: str  # the local folder or file (a builtin preset: its name)
    backbone_class: Optional[type] = None  # the encoder family's class (builtin, preset, release)
    config: Optional[dict] = None  # its constructor arguments

    @property
    def encoder(self):
        """The registered encoder (`bat`, `eat`, `sslam`, `beats`, ...) the source holds."""
        if self.kind == "builtin":
            return self.backbone_class.builtin_presets[self.location]["encoder"]
        if self.backbone_class is None:
            raise UsageError(f"{self.source!r} is a {self.kind.replace('_', ' ')}, not an encoder preset: set "
                             "model.encoder to name its encoder.")
        return encoder_name(self.backbone_class, self.config)


def resolve(source):
    """The `Source` that `source` (a preset name, a folder, a file or `hf://owner/repo[/subfolder]`
    of a folder) names."""
    source = os.fspath(source)
    for entry in ENCODERS.values():
        if source in entry.backbone_class.builtin_presets:
            return Source(source, "builtin", source, entry.backbone_class,
                          dict(entry.backbone_class.builtin_presets[source]["config"]))
    path = download_preset(source) if is_hub_uri(source) else source
    if os.path.isdir(path):
        task = is_task_preset(path)
        owner = own_config_class(path)  # a task preset holds its backbone's preset files too
        if owner is not None:
            return Source(source, "task" if task else "preset", path, owner, owner.preset_config(path))
        if task:
            return Source(source, "task", path)
        if os.path.isfile(os.path.join(path, WEIGHTS_FILE)):  # the family named by the weights' names
            backbone_class, config = recognise_checkpoint(checkpoint_shapes(path), source)
            return Source(source, "release", path, backbone_class, config)
        if os.path.isfile(os.path.join(path, CONFIG_FILE)):
            raise UsageError(f"{path}/{CONFIG_FILE} fits no encoder's constructor.")
        raise UsageError(f"{source}: a folder with neither {CONFIG_FILE}, {WEIGHTS_FILE} nor a task preset.")
    if os.path.isfile(path):
        return Source(source, "keras_file" if path.endswith(".keras") else "checkpoint", path)
    names = sorted({name for entry in ENCODERS.values() for name in entry.backbone_class.builtin_presets})
    raise FileNotFoundError(f"{source!r} is neither a preset name ({', '.join(names)}), a folder, a file nor "
                            "hf://owner/repo[/subfolder].")


def own_config_class(directory):
    """The backbone class whose preset config a folder holds (`EncoderModel.holds_own_config`),
    or `None`."""
    return next((e.backbone_class for e in ENCODERS.values() if e.backbone_class.holds_own_config(directory)), None)


def recognise_checkpoint(state, source="the checkpoint"):
    """`(backbone class, constructor arguments)` of the official encoder in a state dict (or a
    dict of shapes), read off its weights by each registered class's `recognise_checkpoint`,
    whatever prefix wraps its keys."""
    classes = list(dict.fromkeys(encoder.backbone_class for encoder in ENCODERS.values()))
    for backbone_class in classes:
        found = backbone_class.recognise_checkpoint(state)
        if found is not None:
            return backbone_class, found[0]
    raise UsageError(f"{source} holds no encoder keras-bat knows ({', '.join(c.__name__ for c in classes)}): "
                     f"no key marks one of their layouts (keys such as {sorted(state)[:3]}).")


def encoder_of_source(source):
    """The registered encoder a preset name, a preset folder, an official release folder or a
    Hub URI of either holds."""
    return resolve(source).encoder


def backbone_of(found, load_weights=True, **overrides):
    """The backbone of a resolved `builtin`, `preset` or `release` source."""
    if found.kind == "release":
        if not load_weights:
            return found.backbone_class(**{**found.config, **overrides})
        return found.backbone_class.from_checkpoint(read_state_dict(found.location), source=found.source,
                                                    **overrides)
    if found.kind in ("builtin", "preset") or (found.kind == "task" and found.backbone_class is not None):
        return found.backbone_class.from_preset(found.location, load_weights=load_weights, **overrides)
    raise UsageError(f"{found.source!r} is a {found.kind.replace('_', ' ')}, not an encoder preset.")


def backbone_from_source(source, encoder=None, checkpoint_key=None, architecture="bat_base"):
    """A backbone from a preset name, a preset folder, an official release folder, a Hub URI of
    either, or an official checkpoint file of `encoder` loaded into the `architecture` preset.

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
    found = source if isinstance(source, Source) else resolve(source)
    if found.kind != "checkpoint":
        return backbone_of(found)
    shape = resolve(architecture)
    if shape.kind not in ("builtin", "preset"):
        raise UsageError(f"Unknown architecture {architecture!r}: expected a preset name or a preset directory.")
    name = encoder or shape.encoder
    return build_encoder(name, shape.location, read_state_dict(found.location, checkpoint_key))


def load_model_source(source, **backbone_options):
    """What `source` names: the `AudioClassifier` of a task preset, the model of a `.keras`
    file, or a backbone (with `backbone_options` as in `backbone_from_source`)."""
    found = resolve(source)
    if found.kind == "task":
        return AudioClassifier.from_preset(found.location)
    if found.kind == "keras_file":
        import keras  # keras-bat's classes are registered: importing this module imported keras_bat.models

        return keras.saving.load_model(found.location, compile=False)
    return backbone_from_source(found, **backbone_options)
