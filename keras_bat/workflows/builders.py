"""From config sections to datasets, backbones, heads and task models."""

from pathlib import Path

import numpy as np

from keras_bat.data.audio import SAMPLE_RATE
from keras_bat.data.feature_cache import feature_shapes
from keras_bat.data import datasets as readers
from keras_bat.data.synthetic import SOUND_CLASSES, write_synthetic_dataset
from keras_bat.heads import HEADS, get_head

HEAD_TYPES = tuple(HEADS)


def build_splits(data, output_dir, fold=None):
    """`{split: AudioDataset}` for the config's `data` section."""
    name, root, options = data["dataset"], data["root"], dict(data["options"] or {})
    if name == "synthetic":
        root = root or str(Path(output_dir) / "synthetic_data")
        task = options.pop("task", "multiclass")
        written = write_synthetic_dataset(root, task=task, **options)
        if task == "frame":
            return readers.dcase2016_task2(root)
        return {split: readers.csv_dataset(path, class_names=SOUND_CLASSES, name=f"synthetic/{split}")
                for split, path in written.items()}
    if root is None:
        raise ValueError(f"data.root is not set: point it at your copy of {name!r} "
                         f"(e.g. --set data.root=/data/{name}).")
    if name == "audioset":
        return readers.audioset(root, **options)
    if name == "esc50":
        return readers.esc50(root, test_fold=fold or options.pop("test_fold", 1))
    if name == "speech_commands":
        return readers.speech_commands(root, **options)
    if name == "birdset":
        return readers.birdset(root, **options)
    if name == "dcase2016_task2":
        return readers.dcase2016_task2(root, **options)
    if name == "librispeech":
        splits = options.get("splits", {"train": "train-clean-100", "test": "test-clean"})
        return {split: readers.librispeech(root, folder) for split, folder in splits.items()}
    if name == "folder":
        return {split: readers.folder_dataset(Path(root) / split) for split in
                (data["train_split"], data["eval_split"]) if (Path(root) / split).is_dir()}
    if name == "csv":
        return {split: readers.csv_dataset(Path(root) / f"{split}.csv", **options) for split in
                (data["train_split"], data["eval_split"]) if (Path(root) / f"{split}.csv").is_file()}
    if name == "audio_files":
        return {data["train_split"]: readers.audio_files(root, **options)}
    raise ValueError(f"Unknown dataset {name!r}; expected audioset, esc50, speech_commands, birdset, "
                     f"dcase2016_task2, librispeech, folder, csv, audio_files or synthetic.")


def split(splits, name, what):
    if name not in splits:
        raise ValueError(f"The dataset has no {what} split {name!r}; it has {sorted(splits)}.")
    return splits[name]


def build_backbone(model, num_query_tokens=0, dropout_free=True, use_padding_mask=False):
    """The backbone of the `model` section: the encoder `model.encoder` (bat,
    eat, sslam, beats) from a preset name, preset directory or dict of
    constructor arguments, with the checkpoint `model.weights` loaded by that
    encoder's loader."""
    from keras_bat.models.encoders import build_encoder, get_encoder

    name = model.get("encoder", "bat")
    overrides = {"num_query_tokens": num_query_tokens}
    if use_padding_mask:
        overrides["use_padding_mask"] = True
    if model["drop_path"]:
        overrides["drop_path_rate"] = model["drop_path"]
    if model["dtype"]:
        overrides["dtype"] = model["dtype"]
    try:
        return build_encoder(name, model["backbone"], model["weights"], model["checkpoint_key"], **overrides)
    except TypeError as error:
        raise ValueError(f"model.backbone / model settings do not fit a {get_encoder(name).backbone_class.__name__}: "
                         f"{error}") from error


def save_task_preset(config, model, backbone, dataset, directory):
    """Writes the trained `model` as a task preset (frontend, backbone, head, label names) that
    `AudioClassifier.from_preset` and `keras-bat export` read; a head trained on cached features
    is put back on its backbone and frontend first."""
    from keras_bat.models import AudioClassifier

    if model.backbone is None:
        model = AudioClassifier(backbone, model.head, frontend=run_frontend(config, backbone), task=dataset.task,
                                label_names=dataset.class_names)
    model.save_to_preset(str(directory))
    return str(directory)


def build_run_backbone(config):
    """The backbone of a probing or finetuning run (with query tokens for VQT heads)."""
    head = config["head"]
    return build_backbone(config["model"], head["num_query_tokens"] if get_head(head["type"]).reads_query_tokens else 0)


def build_head(head, num_classes, task, backbone):
    """The head of the `head` section, built by its class from the settings it takes."""
    settings = {key: head[key] for key in ("pooling", "num_prototypes", "use_norm", "dropout", "lasso_weight",
                                           "num_query_tokens")}
    return get_head(head["type"]).from_settings(num_classes, task, backbone, **settings)


def build_classifier(config, dataset, backbone=None, cached=False):
    """Backbone + head + frontend + augmentation, compiled as the config says;
    with `cached=True`, the head alone, trained on precomputed features."""
    from keras_bat.data.augment import AudioAugmentation
    from keras_bat.models import AudioClassifier
    from keras_bat.training import WarmupCosineDecay, paper_adamw

    train, head_config = config["train"], config["head"]
    backbone = backbone or build_run_backbone(config)
    head = build_head(head_config, dataset.num_classes, dataset.task, backbone)
    augment = config["augment"]
    model = AudioClassifier(None if cached else backbone, head,
                            frontend=None if cached else run_frontend(config, backbone),
                            task=dataset.task, freeze_backbone=not train["finetune"],
                            label_smoothing=train["label_smoothing"], asymmetric_loss=train["asymmetric_loss"],
                            augmentation=AudioAugmentation(**augment, seed=config["seed"])
                            if augmentation_active(augment) else None, label_names=dataset.class_names)
    schedule = WarmupCosineDecay(train["lr"], train["warmup_steps"], train["steps"], train["min_lr"])
    optimizer = paper_adamw(schedule, finetune=train["finetune"], weight_decay=train["weight_decay"],
                            layer_decay=train["layer_decay"], depth=backbone.depth, beta_2=train["beta2"])
    model.compile(optimizer=optimizer)
    # Built now, so that checkpoints can be restored before training.
    if cached:
        time_frames = config["model"]["time_frames"]
        model({name: np.zeros((1, *shape), "float32") for name, shape in
               feature_shapes(backbone, time_frames, cache_tokens(head_config, dataset.task)).items()})
    else:
        model(np.zeros((1, int(round(config["data"]["clip_seconds"] * SAMPLE_RATE))), "float32"))
    return model


def run_frontend(config, backbone):
    """The frontend the backbone reads, at the run's `model.time_frames` (legacy
    Kaldi-fbank frontends normalised with `model.fbank_statistics`)."""
    model = config["model"]
    return backbone.make_frontend(model["time_frames"], dataset=model["fbank_statistics"])


def augmentation_active(augment):
    return any(augment[k] for k in ("gain", "color_noise_chance", "time_roll", "mixup_chance",
                                    "freq_mask_param", "time_mask_param"))


def cache_tokens(head_config, task):
    """What a feature cache must hold for this head (its class declares it):
    `"cls"`, `"all"`, or `None` when no cache can serve it."""
    return get_head(head_config["type"]).cache_tokens(head_config["pooling"], task)
