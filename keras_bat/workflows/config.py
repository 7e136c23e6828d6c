"""Run configurations: defaults, YAML recipe files with variants, overrides.

A recipe file has a `base` section and optional `variants` (one per head or
finetuning); each is a partial config merged over `DEFAULTS`. The paper's
recipes ship with the package (`keras_bat/workflows/configs/`) and are named
by their stem (`esc50`); any other YAML file is named by its path.
Command-line overrides are `section.key=value` strings with YAML values.
"""

import copy
import importlib.resources
import os

import yaml

from keras_bat.errors import UsageError

DEFAULTS = {
    "name": "run",
    "output_dir": None,  # default: runs/<name>
    "seed": 0,
    "data": {
        "dataset": None,          # audioset | esc50 | speech_commands | birdset | dcase2016_task2 |
                                  # librispeech | folder | csv | audio_files | synthetic
        "root": None,             # folder (or CSV file) of the dataset
        "options": {},            # reader arguments, e.g. {version: as2m}
        "train_split": "train",
        "eval_split": "test",
        "folds": None,            # ESC-50: list of test folds for cross validation
        "clip_seconds": 10.24,
        "engine": "tf",           # tf | grain
        "num_workers": 4,
        "balanced_sampling": None,  # None | mean | first
        "samples_per_epoch": None,
        "noise_std": 0.0,
        "max_label_length": 400,
    },
    "model": {
        "encoder": "bat",         # bat | eat | sslam | beats (keras_bat.models.encoders) | auto (model.backbone's)
        "backbone": "bat_base",   # preset name, preset directory, hf:// URI, or dict of the encoder's arguments
        "fbank_statistics": "audioset",  # eat / sslam / beats: whose Kaldi-fbank statistics normalise inputs
        "weights": None,          # official checkpoint (.pt / .safetensors / folder)
        "checkpoint_key": None,   # e.g. ema_encoder
        "time_frames": 1024,
        "drop_path": 0.0,
        "dtype": None,            # e.g. mixed_bfloat16
    },
    "head": {
        "type": "cgp",            # cgp | linear | lcgp | h2t | pb | vqt | asr
        "num_prototypes": 10000,
        "pooling": "cls",         # cls | mean | frame (pb: max | frame)
        "use_norm": False,
        "dropout": 0.2,
        "lasso_weight": 1e-4,
        "num_query_tokens": 10,
    },
    "train": {
        "finetune": False,
        "lora_rank": None,        # finetuning with LoRA: factors of this rank on the attention projections,
                                  # every other encoder weight frozen (`--variant lora`)
        "batch_size": 48,
        "eval_batch_size": None,
        "steps": 20000,
        "steps_per_epoch": 1000,  # logs, validation and checkpoints happen every epoch
        "passes": None,           # passes over the training split: sets steps, epochs and warmup by its size
        "validate": True,
        "lr": 1e-3,
        "min_lr": 1e-6,
        "warmup_steps": 500,
        "weight_decay": 0.05,
        "beta2": 0.999,
        "layer_decay": None,
        "asymmetric_loss": True,
        "label_smoothing": 0.0,
        "feature_cache": "auto",  # auto | on | off: probe from the frozen encoder's cached features
        "cache_budget_gb": 50.0,
        "cache_dir": None,        # default: <run>/feature_cache; share it across probes of one encoder
        "backup_every_steps": None,  # back up every N steps; None: every backup_minutes (and at epoch ends)
        "backup_minutes": 5.0,
        "verbose": 1,
    },
    "augment": {
        "gain": False, "color_noise_chance": 0.0, "time_roll": False, "mixup_chance": 0.0,
        "mixup_alpha": 0.8, "hard_mixup_labels": False, "freq_mask_param": 0, "time_mask_param": 0,
        "mask_repeats": 1,
    },
    "evaluate": {"event_threshold": 0.3, "median_filter": 3, "collar": 0.2},
    # keras.distribution on JAX: kind data_parallel | model_parallel (batch sizes must divide the devices);
    # on TensorFlow, data_parallel is tf.distribute.MirroredStrategy over the host's GPUs (else CPU devices);
    # a run over several processes: num_processes, this one's process_id and process 0's host:port as
    # coordinator (or Keras' KERAS_DISTRIBUTION_* variables, or SLURM's), timeout in seconds.
    "distribution": {"kind": None, "model_parallel": 2, "num_processes": None, "process_id": None,
                     "coordinator": None, "timeout": 300},
    "pretrain": {
        "decoder_depth": 6, "decoder_heads": 12, "num_views": 16, "mask_ratio": 0.8,
        "ema_decay_start": 0.9998, "ema_decay_end": 0.99999, "ema_warmup_steps": 100000,
        "batch_size": 24, "steps": 400000, "steps_per_epoch": 1000, "lr": 5e-4, "min_lr": 1e-6,
        "warmup_steps": 53000, "weight_decay": 0.05, "beta2": 0.95, "verbose": 1,
        "backup_every_steps": None, "backup_minutes": 5.0,
        "export": "teacher",      # the encoder written to backbone/ and snapshots: teacher | student
        "snapshot_steps": [],  # export the encoder after these steps (0: the random initialisation)
    },
}

# The embedded default: runs on a laptop CPU in a few minutes.
DEMO_CONFIG = {
    "name": "demo",
    "data": {"dataset": "synthetic", "options": {"splits": {"train": 384, "test": 128}, "clip_seconds": 2.56},
             "clip_seconds": 2.56, "num_workers": 2},
    "model": {"backbone": {"dim": 192, "depth": 4, "num_heads": 3}, "time_frames": 256},
    "head": {"num_prototypes": 256},
    "train": {"batch_size": 32, "steps": 240, "steps_per_epoch": 40, "lr": 1e-2, "warmup_steps": 20, "verbose": 2},
    # The student at lr 2e-4: the setting of the README's learning curve (in single-seed trials the
    # teacher, or lr 1e-3, stayed below the random initialisation up to 480 and 1440 steps).
    "pretrain": {"decoder_depth": 2, "decoder_heads": 3, "num_views": 4, "batch_size": 8, "steps": 240,
                 "steps_per_epoch": 40, "lr": 2e-4, "warmup_steps": 24, "ema_decay_start": 0.99,
                 "ema_decay_end": 0.999, "ema_warmup_steps": 240, "export": "student", "verbose": 2},
}


# `--variant lora` of every recipe (and of the demo config): its finetune variant's settings, with LoRA
# factors of rank 8 trained in place of the whole encoder, at a learning rate for them (no layer decay:
# each factor is already small).
LORA_VARIANT = {"train": {"finetune": True, "lora_rank": 8, "lr": 5e-4, "layer_decay": None}}


# What each setting takes: a type (`int`, `float`, `bool`, `str`, `list`, `dict`, `preset`: a name or a
# dict), an optional bound (`>0`, `>=0`, `<1`: `0..1` is a probability), `|none` when it may be unset, or
# the choices separated by `/`. `validate` checks a whole config against it before any work starts.
SETTINGS = {
    "name": "str", "output_dir": "str|none", "seed": "int",
    "data.dataset": "str|none", "data.root": "str|none", "data.options": "dict", "data.train_split": "str",
    "data.eval_split": "str", "data.folds": "list|none", "data.clip_seconds": "float>0", "data.engine": "tf/grain",
    "data.num_workers": "int>=0", "data.balanced_sampling": "mean/first|none", "data.samples_per_epoch": "int>0|none",
    "data.noise_std": "float>=0", "data.max_label_length": "int>0",
    "model.encoder": "str", "model.backbone": "preset", "model.fbank_statistics": "str",
    "model.weights": "str|none", "model.checkpoint_key": "str|none", "model.time_frames": "int>0",
    "model.drop_path": "float0..1", "model.dtype": "float32/float16/bfloat16/mixed_float16/mixed_bfloat16|none",
    "head.type": "str", "head.num_prototypes": "int>0", "head.pooling": "cls/mean/frame/max", "head.use_norm": "bool",
    "head.dropout": "float0..1", "head.lasso_weight": "float>=0", "head.num_query_tokens": "int>0",
    "train.finetune": "bool", "train.lora_rank": "int>0|none", "train.batch_size": "int>0",
    "train.eval_batch_size": "int>0|none",
    "train.steps": "int>0", "train.steps_per_epoch": "int>0", "train.passes": "int>0|none", "train.validate": "bool",
    "train.lr": "float>0",
    "train.min_lr": "float>=0", "train.warmup_steps": "int>=0", "train.weight_decay": "float>=0",
    "train.beta2": "float0..1", "train.layer_decay": "float>0|none", "train.asymmetric_loss": "bool",
    "train.label_smoothing": "float0..1", "train.feature_cache": "auto/on/off", "train.cache_budget_gb": "float>=0",
    "train.cache_dir": "str|none", "train.backup_every_steps": "int>0|none", "train.backup_minutes": "float>0",
    "train.verbose": "int0..2",
    "augment.gain": "bool", "augment.color_noise_chance": "float0..1", "augment.time_roll": "bool",
    "augment.mixup_chance": "float0..1", "augment.mixup_alpha": "float>0", "augment.hard_mixup_labels": "bool",
    "augment.freq_mask_param": "int>=0", "augment.time_mask_param": "int>=0", "augment.mask_repeats": "int>0",
    "evaluate.event_threshold": "float0..1", "evaluate.median_filter": "int>0", "evaluate.collar": "float>=0",
    "distribution.kind": "data_parallel/model_parallel|none", "distribution.model_parallel": "int>0",
    "distribution.num_processes": "int>0|none", "distribution.process_id": "int>=0|none",
    "distribution.coordinator": "str|none", "distribution.timeout": "int>0",
    "pretrain.decoder_depth": "int>0", "pretrain.decoder_heads": "int>0", "pretrain.num_views": "int>0",
    "pretrain.mask_ratio": "float0..1", "pretrain.ema_decay_start": "float0..1", "pretrain.ema_decay_end": "float0..1",
    "pretrain.ema_warmup_steps": "int>=0", "pretrain.batch_size": "int>0", "pretrain.steps": "int>0",
    "pretrain.steps_per_epoch": "int>0", "pretrain.lr": "float>0", "pretrain.min_lr": "float>=0",
    "pretrain.warmup_steps": "int>=0", "pretrain.weight_decay": "float>=0", "pretrain.beta2": "float0..1",
    "pretrain.verbose": "int0..2", "pretrain.backup_every_steps": "int>0|none", "pretrain.backup_minutes": "float>0",
    "pretrain.export": "teacher/student", "pretrain.snapshot_steps": "list",
}


def validate(config):
    """`config` with every setting checked against `SETTINGS` (numbers written as YAML strings,
    such as `1e-3`, converted); the first bad one raises a `ValueError` that names the key, the
    value and what it takes."""
    config = copy.deepcopy(config)
    for key, rule in SETTINGS.items():
        *sections, name = key.split(".")
        node = config
        for section in sections:
            node = node[section]
        node[name] = check_setting(key, node[name], rule)
    if config["evaluate"]["median_filter"] % 2 == 0:
        raise UsageError(f"Setting evaluate.median_filter={config['evaluate']['median_filter']}: expected an odd "
                         "number of time patches (the filter is centred on each patch).")
    if config["train"]["lora_rank"] is not None and not config["train"]["finetune"]:
        raise UsageError(f"Setting train.lora_rank={config['train']['lora_rank']} trains LoRA factors of the encoder: "
                         "it needs train.finetune=true (keras-bat finetune --variant lora).")
    return config


def check_setting(key, value, rule):
    """`value` as setting `key` takes it (see `SETTINGS`), or a `UsageError` that says why not."""
    rule, _, optional = rule.partition("|")
    if value is None and optional == "none":
        return None
    kind = None if "/" in rule else next(k for k in ("int", "float", "bool", "str", "list", "dict", "preset")
                                         if rule.startswith(k))
    expected = _describe_rule(rule, kind, optional)
    problem = UsageError(f"Setting {key}={value!r}: expected {expected}.")
    if kind is None:  # choices
        if isinstance(value, bool) and {"on", "off"} <= set(rule.split("/")):
            value = "on" if value else "off"  # YAML 1.1 reads on / off as booleans
        if value not in rule.split("/"):
            raise problem
        return value
    if kind in ("int", "float"):
        value = _number(value, kind)
        if value is None:
            raise problem
        bound = rule[len(kind):]
        low, high = {"": (None, None), ">0": (0, None), ">=0": (0, None), "0..1": (0, 1), "0..2": (0, 2)}[bound]
        if (low is not None and (value < low or (bound == ">0" and value == 0))) or (high is not None and value > high):
            raise problem
        return value
    types = {"bool": bool, "str": str, "list": list, "dict": dict, "preset": (str, dict)}[kind]
    if not isinstance(value, types) or (kind == "str" and not value):
        raise problem
    return value


def _number(value, kind):
    """`value` as an int or float, or `None` when it is not one (booleans are not numbers)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (
            float("inf"), float("-inf")):
        return None
    if kind == "int":
        return int(value) if float(value).is_integer() else None
    return float(value)


def _describe_rule(rule, kind, optional):
    if kind is None:
        text = "one of " + ", ".join(rule.split("/"))
    else:
        bound = rule[len(kind):]
        nouns = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a text",
                 "list": "a list", "dict": "a mapping", "preset": "a preset name, folder or mapping"}
        bounds = {"": "", ">0": " > 0", ">=0": " >= 0", "0..1": " from 0 to 1", "0..2": " from 0 to 2"}
        text = nouns[kind] + bounds[bound]
    return text + (" (or null)" if optional == "none" else "")


def merge(base, update, path=""):
    """`base` updated by `update`, recursively; keys unknown to `base` raise."""
    merged = copy.deepcopy(base)
    for key, value in (update or {}).items():
        where = f"{path}{key}"
        if key not in merged:
            raise UsageError(f"Unknown config key {where!r}; known keys here: {sorted(merged)}")
        if isinstance(merged[key], dict) and key != "options" and not (where == "model.backbone"):
            if not isinstance(value, dict):
                raise UsageError(f"Config key {where!r} is a section; received {value!r}")
            merged[key] = merge(merged[key], value, f"{where}.")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_overrides(overrides):
    """`["train.steps=100", "head.type=linear"]` -> nested dict (YAML values)."""
    result = {}
    for item in overrides or []:
        if "=" not in item:
            raise UsageError(f"Overrides look like section.key=value; received {item!r}")
        key, value = item.split("=", 1)
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return result


def load_config(path=None, variant=None, overrides=None, base=None):
    """The full config of a run.

    Args:
        path: a built-in recipe's name (see `builtin_recipes()`), a YAML
            recipe file, or `None` for the embedded demo config.
        variant: name of a variant in the file (e.g. `cgp`, `finetune`).
        overrides: list of `section.key=value` strings.
        base: dict merged first (the workflow's own defaults).

    Returns:
        dict: `DEFAULTS` <- base <- file's base <- variant <- overrides.
    """
    config = merge(DEFAULTS, base)
    if path is None:
        config = merge(config, DEMO_CONFIG)
        variants = {}
    else:
        recipe = read_recipe(path)
        unknown = set(recipe) - {"base", "variants", "description"}
        if unknown:
            raise UsageError(f"{path}: top-level keys must be base, variants, description; got {sorted(unknown)}")
        config = merge(config, recipe.get("base"))
        variants = recipe.get("variants") or {}
    if variant is not None:
        for settings in variant_settings(variants, variant, path):
            config = merge(config, settings)
    config = merge(config, parse_overrides(overrides))
    config = validate(config)
    if config["output_dir"] is None:
        config["output_dir"] = f"runs/{config['name']}" + (f"_{variant}" if variant else "")
    return config


def variant_settings(variants, variant, path=None):
    """The partial configs that a recipe's `variant` merges, in order: the recipe's own; or for
    `lora`, unless the recipe defines it, its `finetune` variant's and then `LORA_VARIANT`."""
    if variant in variants:
        return [variants[variant]]
    if variant == "lora":
        return [variants.get("finetune") or {}, LORA_VARIANT]
    raise UsageError(f"Unknown variant {variant!r} in {path or 'the demo config'}; "
                     f"available: {sorted({*variants, 'lora'})}")


def builtin_recipes():
    """Names of the recipes that ship with keras-bat (the paper's settings per task)."""
    folder = importlib.resources.files("keras_bat.workflows") / "configs"
    return sorted(entry.name[:-len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def read_recipe(path):
    """The parsed YAML of a recipe file, or of the built-in recipe of that name."""
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f) or {}
    name = os.fspath(path).removesuffix(".yaml")
    if name not in builtin_recipes():
        raise FileNotFoundError(f"No recipe file {os.fspath(path)!r} and no built-in recipe of that name; "
                                f"built-in recipes: {', '.join(builtin_recipes())}")
    text = (importlib.resources.files("keras_bat.workflows") / "configs" / f"{name}.yaml").read_text("utf-8")
    return yaml.safe_load(text) or {}

