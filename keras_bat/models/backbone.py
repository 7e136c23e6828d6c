"""What every encoder model shares: its inputs, the blocks run over time chunks
with optional query tokens, its frontend and time grid, config round trips and preset
directories (long inputs stream through `keras_bat.models.streaming`)."""

import inspect
import os
import re
import warnings

import keras

from keras_bat.convert.checkpoints import (CONFIG_FILE, NATIVE_WEIGHTS_FILE, WEIGHTS_FILE, read_preset_config,
                                          read_state_dict, save_official_weights, write_json,
                                          write_preset_metadata)
from keras_bat.convert.hub import download_preset, is_hub_uri
from keras_bat.errors import UsageError
from keras_bat.layers.frontend import build_frontend
from keras_bat.layers.base import symbolic
from keras_bat.layers.patching import KeyLengthsWithQueries, PrependQueries


def encoder_inputs(num_mels, depth, dim, use_padding_mask=False, num_query_tokens=0):
    """`(inputs, spectrogram, padding_mask, query_tokens)`: the `keras.Input`s of
    an encoder (`inputs` is the spectrogram alone or a dict; absent ones are `None`)."""
    spectrogram = keras.Input(shape=(None, num_mels), name="spectrogram")
    inputs = {"spectrogram": spectrogram}
    padding_mask = query_tokens = None
    if use_padding_mask:
        padding_mask = inputs["padding_mask"] = keras.Input(shape=(None,), name="padding_mask")
    if num_query_tokens:
        query_tokens = inputs["query_tokens"] = keras.Input(shape=(depth, num_query_tokens, dim), name="query_tokens")
    return (spectrogram if len(inputs) == 1 else inputs), spectrogram, padding_mask, query_tokens


def run_blocks(blocks, tokens, key_lengths, chunk_weights, query_tokens=None, dtype=None, **block_arguments):
    """Runs `blocks` over chunked tokens whose padding is given as `key_lengths`
    `(batch * chunks,)` (computed once, read by every block; `None`: no padding); with query tokens
    `(batch, depth, Q, dim)`, each block's are put in front of the tokens as
    queries that are not keys, and their outputs are kept.

    Returns:
        `(block_outputs, query_outputs)`: each block's token outputs, and each
        block's query outputs (`None` without query tokens).
    """
    block_outputs, query_outputs = [], None
    if query_tokens is None:
        for block in blocks:
            tokens = block(tokens, key_lengths=key_lengths, **block_arguments)
            block_outputs.append(tokens)
        return block_outputs, None
    num_queries = query_tokens.shape[2]
    prepend_queries = PrependQueries(dtype=dtype, name="prepend_queries")
    lengths = KeyLengthsWithQueries(num_queries, dtype=dtype, name="key_lengths_with_queries")(key_lengths)
    query_outputs = []
    for i, block in enumerate(blocks):
        x = prepend_queries(tokens, query_tokens[:, i], chunk_weights)
        x = block(x, key_lengths=lengths, key_offset=num_queries, **block_arguments)
        query_outputs.append(x[:, :num_queries])
        tokens = x[:, num_queries:]
        block_outputs.append(tokens)
    return block_outputs, query_outputs


FRONTEND_FILE = "frontend.json"


def weights_mismatch(error):
    """The first mismatch Keras' `load_weights` reports, in one line: its message goes on to print
    the variable's every value."""
    text = " ".join(str(error).split())
    found = re.search(r"variable\.shape=(\(.*?\)), Received: value\.shape=(.+?)\. "
                      r"Target variable: <Variable path=([^,]+)", text)
    if found is None:
        return text[:300]
    count = re.match(r"A total of (\d+) objects", text)
    layers = f" ({count.group(1)} layers do not fit)" if count else ""
    model_shape, file_shape = (tuple(int(n) for n in re.findall(r"\d+", found.group(i))) for i in (1, 2))
    return f"{found.group(3)} is {model_shape} in the model and {file_shape} in the file{layers}."


class RandomWeightsWarning(UserWarning):
    """A built-in preset name gave a randomly initialised model."""


class classproperty:
    """A read-only property of the class itself (keras-hub's `presets` convention)."""

    def __init__(self, getter):
        self.getter = getter

    def __get__(self, instance, owner):
        return self.getter(owner)


class EncoderModel(keras.Model):
    """Base of the encoder models: `from_config` (with its dtype policy),
    presets (`save_to_preset` writes `config.json` and the Keras weights file
    `model.weights.h5`; `from_preset` reads them back, no converter involved),
    and `export_official`, which writes the weights under the official
    parameter names that `official_parameters()` gives.

    Each encoder sets `frontend` (the registered frontend it reads);
    `keras_bat.models.encoders.register_encoder` adds its `builtin_presets`
    (`name -> {"description", "config", "weights_loader"}`)."""

    builtin_presets = {}
    frontend = "log_mel"
    # Whether the backbone takes a padding mask beside the spectrogram (encoders that do set it
    # per instance).
    use_padding_mask = False
    # Whether the outputs on real patches are the same when masked patches follow them (with
    # `use_padding_mask`): true where tokens meet only through masked attention.
    padding_is_exact = False

    def __init__(self, *args, dtype=None, **kwargs):
        super().__init__(*args, **kwargs)
        # A functional model keeps no policy of its own: record the one its layers were built with
        # (a mixed policy, or a `DTypePolicyMap` of quantized layers), so that the config holds it.
        if dtype is not None:
            self.dtype_policy = keras.dtype_policies.get(dtype)

    def dtype_config(self):
        """The serialized dtype policy for `get_config`: the policy the layers were built with,
        and once layers are quantized (`quantize`), a `DTypePolicyMap` naming each one's
        policy by its path, so that `from_config` and `.keras` files build them quantized."""
        policy = self.dtype_policy
        if not isinstance(policy, keras.dtype_policies.DTypePolicyMap):
            quantized = {layer.path: layer.dtype_policy for layer in self._flatten_layers(include_self=False)
                         if layer.quantization_mode is not None}
            if quantized:
                policy = keras.dtype_policies.DTypePolicyMap(policy, quantized)
        return keras.dtype_policies.serialize(policy)

    @property
    def trainable(self):
        return keras.Model.trainable.fget(self)

    @trainable.setter
    def trainable(self, value):
        keras.Model.trainable.fset(self, value)  # (sets every variable's flag)
        if value and self.lora_rank is not None:
            self._freeze_all_but_lora()

    lora_rank = None  # set by `enable_lora`

    def lora_layers(self):
        """The Dense layers LoRA adapts: the projections each attention layer names in its
        `lora_targets` (BAT, EAT, SSLAM: qkv and proj; BEATs: q, k, v and out)."""
        return [getattr(layer, name) for layer in self._flatten_layers()
                for name in getattr(layer, "lora_targets", ())]

    def enable_lora(self, rank, alpha=None):
        """LoRA finetuning, with Keras' own `Dense.enable_lora`: each attention projection gets
        trainable low-rank factors `A (in, rank)`, `B (rank, out)` (B starts at zero, so the model
        starts equal to itself) and `kernel + alpha / rank * A @ B` in place of its kernel; every
        other weight of the encoder is frozen, and stays frozen when the model is set trainable.
        Saved files hold the merged kernels (`.keras` files and presets load as plain encoders);
        training backups hold the factors.

        Args:
            rank: int, the factors' rank.
            alpha: float, the update's scale numerator. Defaults to `rank`.
        """
        if self.lora_rank is not None:
            raise UsageError(f"LoRA is already enabled on this {type(self).__name__} (rank {self.lora_rank}).")
        if int(rank) != rank or rank <= 0:
            raise UsageError(f"The LoRA rank must be a positive integer. Received: {rank!r}")
        layers = self.lora_layers()
        if not layers:
            raise UsageError(f"{type(self).__name__} has no layers for LoRA: its attention layers name their "
                             "projections in `lora_targets`.")
        for layer in layers:
            layer.enable_lora(int(rank), lora_alpha=alpha)
        self.lora_rank = int(rank)
        self._freeze_all_but_lora()

    def _freeze_all_but_lora(self):
        factors = {id(v) for layer in self.lora_layers() for v in (layer.lora_kernel_a, layer.lora_kernel_b)}
        for variable in self.weights:
            variable.trainable = id(variable) in factors

    def compute_output_spec(self, inputs, training=None, mask=None):
        # The functional graph computes specs of KerasTensors: concrete inputs are described first.
        return super().compute_output_spec(symbolic(inputs), training=training, mask=mask)

    @classproperty
    def presets(cls):
        """The built-in presets: `name -> {"description", "config", "weights"}`.
        `weights` is the URI of a published release that `from_preset` downloads,
        or `None` for an architecture (randomly initialised; the text says how to
        load a checkpoint)."""
        return {name: {"description": preset["description"], "config": dict(preset["config"]),
                       "weights": preset.get("uri")} for name, preset in cls.builtin_presets.items()}

    @classmethod
    def from_preset(cls, preset, load_weights=True, **overrides):
        """Builds the encoder from a preset name, a preset directory or a Hub URI.

        Args:
            preset: str, a name from `presets` (a published release, downloaded,
                or an architecture, randomly initialised: it warns with
                `RandomWeightsWarning` unless `load_weights=False`); a directory
                holding `config.json` and optionally `model.weights.h5` (see
                `save_to_preset`; earlier presets' `model.safetensors` under the
                official names is read too); a directory of an official release (its
                `model.safetensors` without keras-bat's config: the architecture
                is read off the weights); or `hf://owner/repo[/subfolder]` of
                either kind of directory (see `keras_bat.convert.hub`).
            load_weights: bool, load the directory's weights when present.
                `False` also says that random weights are meant.
                Defaults to `True`.
            **overrides: constructor arguments that replace the preset's
                (e.g. `dropout`, `dtype`, `use_padding_mask`).

        On `EncoderModel` itself it returns the family's class the preset holds
        (`EncoderModel.from_preset("hf://lab/beats-release")` is a `BEATsBackbone`),
        as `keras_bat.models.presets.resolve` finds it.
        """
        if cls is EncoderModel:
            from keras_bat.models.presets import backbone_of, resolve

            return backbone_of(resolve(preset), load_weights, **overrides)
        preset = cls._local_preset(preset, load_weights)
        if (os.path.isfile(os.path.join(preset, WEIGHTS_FILE)) and not cls.holds_own_config(preset)):
            return cls.from_checkpoint(read_state_dict(preset), load_weights, source=preset, **overrides)
        model = cls(**{**cls.preset_config(preset), **overrides})
        if preset in cls.builtin_presets:
            if load_weights:
                loader = cls.builtin_presets[preset]["weights_loader"]
                warnings.warn(
                    f"{cls.__name__}.from_preset({preset!r}) has RANDOM weights: the preset is an architecture and "
                    f"keras-bat downloads no weights. Load the official checkpoint with "
                    f"{loader}(model, 'checkpoint.pt'), or use a preset directory written by "
                    "save_to_preset; load_weights=False builds an untrained model without this warning.",
                    RandomWeightsWarning, stacklevel=2)
        elif load_weights:
            model.load_preset_weights(preset)
        return model

    @classmethod
    def _local_preset(cls, preset, load_weights):
        """A Hub URI, or the name of a preset published with weights, as the local folder."""
        preset = os.fspath(preset)
        uri = cls.builtin_presets.get(preset, {}).get("uri")
        if uri and load_weights:
            preset = uri
        return download_preset(preset) if is_hub_uri(preset) else preset

    @classmethod
    def holds_own_config(cls, directory):
        """Whether a folder's `config.json` is this class's: it names the class (keras-hub's
        layout), or, in earlier presets, every key is a constructor argument. An official
        release may hold another library's config there, or none."""
        found = read_preset_config(directory)
        if found is None:
            return False
        class_name, config = found
        if class_name is not None:
            return class_name == cls.__name__
        return isinstance(config, dict) and set(config) <= set(inspect.signature(cls.__init__).parameters)

    def seconds_per_patch(self, frontend=None):
        """Seconds between two time patches, the grid of frame-level targets, outputs and events:
        a patch's frames times the hop of `frontend` (the one this encoder reads by default)."""
        frontend = frontend or self.make_frontend()
        return self.patch_size * frontend.hop_length / frontend.sample_rate

    @classmethod
    def recognise_checkpoint(cls, state):
        """`(constructor arguments, load)` of the official encoder in a state dict, read off its
        weights (`load(model, state)` assigns them), or `None` when it holds none of this class."""
        return None

    @classmethod
    def from_checkpoint(cls, state, load_weights=True, source="the checkpoint", **overrides):
        """The encoder of an official state dict (`{name: array}`), its architecture read off the
        weights (`recognise_checkpoint`), whatever prefix wraps its keys."""
        config, load = cls._recognised_checkpoint(state, source)
        model = cls(**{**config, **overrides})
        if load_weights:
            load(model, state)
        return model

    @classmethod
    def _recognised_checkpoint(cls, state, source):
        """`recognise_checkpoint(state)`, or a `UsageError` naming `source` when it holds none of this class."""
        found = cls.recognise_checkpoint(state)
        if found is None:
            keys = sorted(state)[:3]
            raise UsageError(f"{source} holds no {cls.__name__} weights (keys such as {keys}); "
                             "keras_bat.models.EncoderModel.from_preset recognises every registered encoder.")
        return found

    @classmethod
    def preset_config(cls, preset):
        """The constructor arguments of a preset name or preset directory,
        without building the model."""
        if preset in cls.builtin_presets:
            return dict(cls.builtin_presets[preset]["config"])
        found = read_preset_config(os.fspath(preset))
        if found is None:
            raise UsageError(f"Unknown preset {preset!r}: expected one of {sorted(cls.builtin_presets)} or a "
                             f"directory holding {CONFIG_FILE}.")
        return dict(found[1])

    def load_preset_weights(self, directory):
        """Reads a preset folder's weights into this encoder (built by its config): the Keras
        weights file `save_to_preset` writes, or, in a preset written before it did, the
        `model.safetensors` under the official names (read by the family's converter, as
        `recognise_checkpoint` names it). A folder with neither leaves the weights as they are."""
        native = os.path.join(directory, NATIVE_WEIGHTS_FILE)
        if os.path.isfile(native):
            try:
                self.load_weights(native)
            except ValueError as error:
                raise UsageError(f"{native} does not fit the {type(self).__name__} its {CONFIG_FILE} builds: "
                                 f"{weights_mismatch(error)}") from error
        elif os.path.isfile(os.path.join(directory, WEIGHTS_FILE)):
            state = read_state_dict(directory)
            _, load = self._recognised_checkpoint(state, os.path.join(directory, WEIGHTS_FILE))
            load(self, state)

    @property
    def _default_save_signature(self):  # a private hook: see keras_bat.ops.keras_internals
        # Under TensorFlow, writing a SavedModel traces every nested Keras model's default
        # signature, here `(batch, None, mels)`; the encoders need a known number of frames,
        # which the exporting model's frontend gives (see keras_bat.export).
        return None

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)

    def official_parameters(self):
        raise NotImplementedError

    def make_frontend(self, time_frames=None, dataset="audioset"):
        """The frontend this encoder reads: waveforms -> its spectrogram.

        Args:
            time_frames: int or `None`, pad or crop to this many frames.
            dataset: str, whose normalisation statistics a legacy Kaldi-fbank
                frontend uses (see `KaldiFbank.for_encoder`); BAT's log-mel
                frontend normalises each clip and ignores it. Defaults to
                `"audioset"`.
        """
        return build_frontend(self.frontend, time_frames, dataset, num_mels=self.num_mels,
                              use_kernels=self.use_kernels)

    def save_to_preset(self, directory, frontend=None):
        """Writes the encoder as a preset folder in keras-hub's layout: `config.json` (the class
        and its constructor arguments), `model.weights.h5` (Keras' weights file, which loads under
        every backend: a quantized encoder's int8 or float8 weights and scales as they are, its
        config naming each layer's policy), `frontend.json` (the frontend it reads, `frontend` or
        `make_frontend()`) and `metadata.json` (keras-bat and Keras versions, the backend it was
        saved under, the parameter count). For the authors' PyTorch code, `export_official`
        writes the weights under their official names."""
        os.makedirs(directory, exist_ok=True)
        serialized = keras.saving.serialize_keras_object(self)
        serialized["config"] = {k: v for k, v in self.get_config().items() if k not in ("name", "trainable")}
        serialized.pop("build_config", None)
        write_json(os.path.join(directory, CONFIG_FILE), serialized)
        self.save_weights(os.path.join(directory, NATIVE_WEIGHTS_FILE))
        legacy = os.path.join(directory, WEIGHTS_FILE)
        if os.path.exists(legacy):  # an earlier preset's official-name weights in the same folder
            os.remove(legacy)
        write_json(os.path.join(directory, FRONTEND_FILE),
                   keras.saving.serialize_keras_object(frontend or self.make_frontend()))
        write_preset_metadata(directory, self)

    def export_official(self, path):
        """Writes the weights under the official parameter names, as a `.safetensors` file that
        the authors' PyTorch code loads (and `from_preset` reads back as an official release when
        it is a folder's `model.safetensors`).

        Args:
            path: the `.safetensors` file to write, or a folder (it gets `model.safetensors`).

        Returns:
            The path of the written file.
        """
        if any(layer.quantization_mode is not None for layer in self._flatten_layers()):
            raise UsageError(
                f"This {type(self).__name__} is quantized: the official code reads float weights. Export the float "
                "model (from_preset(...) before quantize), or keep the quantized one as a preset (save_to_preset) "
                "or a .keras file.")
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, WEIGHTS_FILE)
        elif not path.endswith(".safetensors"):
            raise UsageError(f"export_official writes a .safetensors file (or a folder's {WEIGHTS_FILE}). "
                             f"Received: {path!r}")
        save_official_weights(self, path, self.official_parameters())
        return path
