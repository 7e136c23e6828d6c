"""From a run's settings to datasets, backbones, heads and task models."""

import numpy as np

from keras_bat.data.audio import SAMPLE_RATE
from keras_bat.data.datasets import read_dataset
from keras_bat.errors import UsageError
from keras_bat.heads import get_head
from keras_bat.workflows.feature_cache import feature_shapes


def build_splits(data, output_dir, fold=None):
    """`{split: AudioDataset}` of the config's `data` section (a registered dataset)."""
    return read_dataset(data["dataset"], data["root"], (data["train_split"], data["eval_split"]), fold,
                        output_dir=output_dir, **dict(data["options"] or {}))


def require_split(splits, name, what):
    """The split `name` of `splits`, or an error naming the splits there are."""
    if name not in splits:
        raise UsageError(f"The dataset has no {what} split {name!r}; it has {sorted(splits)}.")
    return splits[name]


def build_backbone(model, num_query_tokens=0, use_padding_mask=False):
    """The backbone of the `model` section: the encoder `model.encoder` (bat,
    eat, sslam, beats; `auto`: the one `model.backbone` holds) from a preset
    name, preset directory, Hub URI or dict of constructor arguments, with the
    checkpoint `model.weights` loaded by that encoder's loader."""
    from keras_bat.models.encoders import build_encoder, get_encoder
    from keras_bat.models.presets import encoder_of_source

    name = model.get("encoder", "bat")
    if name == "auto":
        if isinstance(model["backbone"], dict):
            raise UsageError("model.encoder=auto reads the encoder off a preset name, folder or Hub URI; "
                             "with a dict of constructor arguments as model.backbone, name the encoder.")
        name = encoder_of_source(model["backbone"])
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
        raise UsageError(f"model.backbone / model settings do not fit a {get_encoder(name).backbone_class.__name__}: "
                         f"{error}") from error


def build_run_backbone(config):
    """The backbone of a probing or finetuning run (with query tokens for VQT heads)."""
    head = config["head"]
    return build_backbone(config["model"], head["num_query_tokens"] if get_head(head["type"]).reads_query_tokens else 0)


def build_head(head, num_classes, task, backbone):
    """The head of the `head` section, built by its class from the settings it takes."""
    settings = {key: head[key] for key in ("pooling", "num_prototypes", "use_norm", "dropout", "lasso_weight",
                                           "num_query_tokens")}
    return get_head(head["type"]).from_settings(num_classes, task, backbone, **settings)


def build_classifier(config, dataset, backbone, frontend, cache_tokens=None):
    """Backbone + head + frontend + augmentation, compiled as the config says;
    with `cache_tokens` (what a feature cache holds), the head alone, trained on
    precomputed features. Prints how many parameters train."""
    from keras_bat.data.augment import AudioAugmentation
    from keras_bat.models import AudioClassifier
    from keras_bat.training import WarmupCosineDecay, paper_adamw
    from keras_bat.training.distribution import is_writer

    train, augment, cached = config["train"], config["augment"], cache_tokens is not None
    head = build_head(config["head"], dataset.num_classes, dataset.task, backbone)
    if train["lora_rank"] is not None and not cached:
        backbone.enable_lora(train["lora_rank"])
    model = AudioClassifier(None if cached else backbone, head, frontend=None if cached else frontend,
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
        model({name: np.zeros((1, *shape), "float32") for name, shape in
               feature_shapes(backbone, config["model"]["time_frames"], cache_tokens).items()})
    else:
        model(np.zeros((1, int(round(config["data"]["clip_seconds"] * SAMPLE_RATE))), "float32"))
    if is_writer():  # a run over several processes reports once
        print(trainable_parameters_text(model))
    return model


def trainable_parameters_text(model):
    """How many of the model's parameters train, by part: `trainable parameters: 1,234 of 5,678 (21.7%):
    head 1,000, encoder 234 (LoRA rank 8)`."""
    def count(weights):
        return sum(int(np.prod(w.shape)) for w in weights)

    total, trainable = count(model.weights), count(model.trainable_weights)
    parts = [f"head {count(model.head.trainable_weights):,}"]
    if model.backbone is not None:
        lora = getattr(model.backbone, "lora_rank", None)
        parts.append(f"encoder {count(model.backbone.trainable_weights):,}" + (f" (LoRA rank {lora})" if lora else ""))
    share = 100 * trainable / max(total, 1)
    return f"trainable parameters: {trainable:,} of {total:,} ({share:.2f}%): {', '.join(parts)}"


def save_task_preset(model, backbone, frontend, dataset, directory):
    """Writes the trained `model` as a task preset (frontend, backbone, head, label names) that
    `AudioClassifier.from_preset` and `keras-bat export` read; a head trained on cached features
    is put back on its backbone and frontend first."""
    from keras_bat.models import AudioClassifier

    if model.backbone is None:
        model = AudioClassifier(backbone, model.head, frontend=frontend, task=dataset.task,
                                label_names=dataset.class_names)
    model.save_to_preset(str(directory))
    return str(directory)


def augmentation_active(augment):
    """Whether the `augment` section changes anything."""
    return any(augment[k] for k in ("gain", "color_noise_chance", "time_roll", "mixup_chance",
                                    "freq_mask_param", "time_mask_param"))
