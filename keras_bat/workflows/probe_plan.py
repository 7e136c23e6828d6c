"""A probing or finetuning run, planned once from its config: the data sets, the backbone
and the frontend it reads, the head, and whether the head trains from a feature cache
(what the cache holds, or why the run goes through the encoder)."""

import dataclasses
from pathlib import Path

from keras_bat.data.datasets import AudioDataset
from keras_bat.errors import UsageError
from keras_bat.heads import get_head
from keras_bat.training.distribution import process_count
from keras_bat.workflows.builders import augmentation_active, build_run_backbone, require_split
from keras_bat.workflows.feature_cache import estimate_bytes


@dataclasses.dataclass
class ProbePlan:
    """What a probing or finetuning run trains and evaluates.

    Attributes:
        train_set, eval_set: the data sets.
        backbone: the encoder, with its checkpoint loaded.
        frontend: the layer the encoder reads (at the run's `model.time_frames`).
        head_class: the head's class (`head.type`).
        cache_tokens: what the feature cache holds (`"cls"` or `"all"`), or
            `None` when the run goes through the encoder.
        cache_folder: where the cache lives (`None` without one).
        cache_bytes: the cache's estimated size (0 when no cache can serve the run).
        no_cache_reasons: why the run goes through the encoder (empty with a cache).
    """

    train_set: AudioDataset
    eval_set: AudioDataset
    backbone: object
    frontend: object
    head_class: type
    cache_tokens: str | None
    cache_folder: Path | None
    cache_bytes: int
    no_cache_reasons: tuple

    @property
    def uses_feature_cache(self):
        return self.cache_tokens is not None


def plan_probe(config, run_dir, splits):
    """The `ProbePlan` of a validated config, for the run folder `run_dir` and the data set's
    `splits` (`build_splits`)."""
    data, model, train = config["data"], config["model"], config["train"]
    train_set = require_split(splits, data["train_split"], "training")
    eval_set = require_split(splits, data["eval_split"], "evaluation")
    head_class = get_head(config["head"]["type"])
    backbone = build_run_backbone(config)
    frontend = backbone.make_frontend(model["time_frames"], dataset=model["fbank_statistics"])
    tokens, size, reasons = plan_feature_cache(config, head_class, train_set.task, backbone,
                                               len(train_set) + len(eval_set))
    folder = Path(train["cache_dir"] or Path(run_dir) / "feature_cache") if tokens else None
    return ProbePlan(train_set, eval_set, backbone, frontend, head_class, tokens, folder, size, reasons)


def feature_cache_mode(train):
    """`train.feature_cache` as `auto`, `on` or `off` (YAML reads on / off as booleans)."""
    mode = {True: "on", False: "off"}.get(train["feature_cache"], train["feature_cache"])
    if mode not in ("auto", "on", "off"):
        raise UsageError(f"train.feature_cache must be auto, on or off. Received: {mode!r}")
    return mode


def plan_feature_cache(config, head_class, task, backbone, num_clips):
    """Whether a run can train its head from the frozen encoder's cached features.

    It can when the encoder is frozen and nothing random happens before it (no
    augmentation, training noise or class-balanced sampling), the head does not
    run inside the encoder (VQT) and the task is not CTC; `auto` also needs the
    estimated size within `train.cache_budget_gb`. `on` raises where `auto`
    would go through the encoder.

    Returns:
        `(tokens, bytes, reasons)`: what the cache holds (`None`: no cache),
        its estimated size, and why there is none.
    """
    train, data, head = config["train"], config["data"], config["head"]
    mode = feature_cache_mode(train)
    if mode == "off":
        return None, 0, ("train.feature_cache=off",)
    tokens = head_class.cache_tokens(head["pooling"], task)
    obstacles = [why for why, present in (
        ("finetuning trains the encoder", train["finetune"]),
        ("augmentations run before the encoder", augmentation_active(config["augment"])),
        ("training noise is added to the waveforms", data["noise_std"] > 0),
        ("class-balanced sampling", bool(data["balanced_sampling"])),
        (f"{head['type']} heads run inside the encoder", tokens is None),
        ("CTC targets", task == "ctc"),
        ("the run spans several processes (each would build the cache)", process_count() > 1)) if present]
    if obstacles:
        if mode == "on":
            raise UsageError(f"train.feature_cache=on, but the cache cannot serve this run: {'; '.join(obstacles)}.")
        return None, 0, tuple(obstacles)
    size = estimate_bytes(num_clips, backbone, config["model"]["time_frames"], tokens)
    if size > train["cache_budget_gb"] * 1e9:
        message = f"feature cache of {size / 1e9:.1f} GB exceeds train.cache_budget_gb={train['cache_budget_gb']}"
        if mode == "on":
            raise UsageError(message + "; raise the budget or set train.feature_cache=off.")
        return None, size, (message,)
    return tokens, size, ()
