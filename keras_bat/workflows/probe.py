"""Probing and finetuning runs: train from a config, evaluate, write results.

A run directory holds `config.yaml`, `log.csv` and TensorBoard logs,
`checkpoint.weights.h5` (the weights at the last epoch end), `backup/` (the
latest backup: a run killed at any step and started again with the same
command resumes exactly where it stopped), `results.json`, `skipped_files.txt`,
`feature_cache/` when the probe trains from cached encoder features and, for
heads with a layer gate, `layer_weights.png`.
"""

import functools
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np
import yaml

from keras_bat.data.datasets import CharTokenizer, balanced_sampling_weights
from keras_bat.data.pipeline import (ClipLoader, SkippedFiles, SkippedFilesLogger, StreamPosition, make_pipeline,
                                     ordered_batches)
from keras_bat.errors import UsageError
from keras_bat.training.metrics import (cross_validation_summary, error_rates, event_based_f1, frames_to_events,
                                        mean_average_precision, multilabel_scores)
from keras_bat.training.distribution import (ProcessShard, is_writer, own_folder, setup_distribution,
                                             start_processes, writer_first)
from keras_bat.training.resume import fit_resumable
from keras_bat.workflows.builders import build_classifier, build_splits, save_task_preset
from keras_bat.workflows.config import DEFAULTS
from keras_bat.workflows.feature_cache import FeatureCache
from keras_bat.workflows.probe_plan import feature_cache_mode, plan_probe


def run_probe(config):
    """Trains and evaluates as `config` says (all ESC-50 folds when
    `data.folds` is set); returns the results dict also written to
    `<output_dir>/results.json` by process 0 of a run over several processes)."""
    shared_dir = Path(config["output_dir"])
    start_processes(config["distribution"], config, {"train.batch_size": config["train"]["batch_size"]})
    output_dir = own_folder(shared_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / "config.yaml", "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    folds = config["data"]["folds"]
    start = time.time()
    if folds:
        runs = [_finished_or_run(config, shared_dir / f"fold{fold}", fold) for fold in folds]
        results = {"folds": runs, "summary": cross_validation_summary([r["metrics"] for r in runs])}
    else:
        results = train_and_evaluate(config, shared_dir)
    results["wall_seconds"] = round(time.time() - start, 1)
    with open(output_dir / "results.json", "w") as f:
        json.dump(results, f, indent=2)
    return results


def training_length(train, clips):
    """The `train` settings for a training split of `clips` clips: a split smaller than a batch is
    one batch; with `train.passes`, `steps` make that many passes over it (10 epochs of logs and
    backups, warmup at most a tenth of the steps)."""
    if clips < train["batch_size"]:  # a small data set of one's own: all of it in each batch
        print(f"The training split holds {clips} clips, fewer than a batch of {train['batch_size']}: "
              f"training on batches of {clips}.", file=sys.stderr)
        train = {**train, "batch_size": clips}
    if train["passes"] is None:
        return train
    per_pass = max(1, clips // train["batch_size"])  # whole batches, as a shuffled pass serves them
    steps = train["passes"] * per_pass
    return {**train, "steps": steps, "steps_per_epoch": per_pass * max(1, train["passes"] // 10),
            "warmup_steps": min(train["warmup_steps"], steps // 10)}


def _finished_or_run(config, run_dir, fold):
    """One fold's results; a fold finished by an earlier, interrupted run is not redone."""
    path = Path(run_dir) / "fold_results.json"
    if path.exists():
        return json.loads(path.read_text())
    results = train_and_evaluate(config, run_dir, fold)
    if is_writer():
        path.write_text(json.dumps(results, indent=2))
    return results


def train_and_evaluate(config, run_dir, fold=None):
    """Trains and evaluates one run in `run_dir` (written by process 0 of a run over several
    processes; the others write to scratch folders and share its `backup/`)."""
    data, train = config["data"], config["train"]
    setup_distribution(config["distribution"], {"train.batch_size": train["batch_size"]}, config)
    shared_dir, run_dir = Path(run_dir), own_folder(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config["seed"])
    # A data set generated on first use is written once, by process 0.
    plan = plan_probe(config, run_dir, writer_first(build_splits, data, config["output_dir"], fold))
    train_set, eval_set, backbone = plan.train_set, plan.eval_set, plan.backbone
    train = training_length(train, len(train_set))
    config = {**config, "train": train}
    skipped = SkippedFiles()
    epochs = max(1, -(-train["steps"] // train["steps_per_epoch"]))
    patch_seconds = backbone.seconds_per_patch(plan.frontend)  # the time grid of frame targets and events
    eval_batch_size = train["eval_batch_size"] or train["batch_size"]
    if plan.uses_feature_cache:  # the encoder runs once per clip; train the head alone
        train_cache, eval_cache = feature_caches(plan, config, skipped)
        model = build_classifier(config, train_set, backbone, plan.frontend, cache_tokens=plan.cache_tokens)

        def train_data(position):  # the cache's stream counts batches
            return (train_cache.dataset(train["batch_size"], steps_per_epoch=train["steps_per_epoch"],
                                        seed=config["seed"], start_batch=position), StreamPosition(1, position))

        validation = eval_cache.dataset(eval_batch_size, shuffle=False) if train["validate"] else None
        history = fit_resumable(model, train_data, epochs, train["steps_per_epoch"], shared_dir / "backup",
                                callbacks=run_callbacks(run_dir, skipped), validation_data=validation,
                                **backup_options(train), verbose=train["verbose"], shuffle=False)
        outputs = model.predict(eval_cache.dataset(eval_batch_size, shuffle=False), verbose=0)
        clips = [eval_set.clips[i] for i in eval_cache.meta["clip_indices"]]
        metrics = task_metrics(eval_set.task, clips, np.asarray(outputs), list(eval_cache.targets),
                               config["evaluate"], patch_seconds)
    else:
        if feature_cache_mode(train) == "auto":
            print(f"feature cache off: {'; '.join(plan.no_cache_reasons)}.")
        model = build_classifier(config, train_set, backbone, plan.frontend)
        weights = (balanced_sampling_weights(train_set, data["balanced_sampling"])
                   if data["balanced_sampling"] else None)
        pipeline_args = dict(clip_seconds=data["clip_seconds"], engine=data["engine"],
                             num_workers=data["num_workers"], seed=config["seed"], skipped=skipped,
                             max_label_length=data["max_label_length"], patch_seconds=patch_seconds)

        shard = ProcessShard.of_this_process()

        def train_data(position):
            stream = StreamPosition(shard.local_batch_size(train["batch_size"]), position, shard)
            return make_pipeline(train_set, train["batch_size"], training=True, repeat=True, weights=weights,
                                 samples_per_epoch=data["samples_per_epoch"], noise_std=data["noise_std"],
                                 stream=stream, **pipeline_args), stream

        validation = (make_pipeline(eval_set, eval_batch_size, training=False, **pipeline_args)
                      if train["validate"] else None)
        history = fit_resumable(model, train_data, epochs, train["steps_per_epoch"], shared_dir / "backup",
                                callbacks=run_callbacks(run_dir, skipped), validation_data=validation,
                                **backup_options(train), verbose=train["verbose"] if is_writer() else 0,
                                shuffle=False)
        # Every process evaluates every clip (the same computation on each, as JAX's processes run one
        # program); process 0 writes.
        metrics = evaluate(model, eval_set, data["clip_seconds"], eval_batch_size, config["evaluate"],
                           data["num_workers"], skipped, data["max_label_length"])
    plot = save_layer_gate_plot(model.head, run_dir / "layer_weights.png")
    write_skipped(skipped, run_dir / "skipped_files.txt")
    preset = save_task_preset(model, backbone, plan.frontend, train_set, run_dir / "preset")
    return {"metrics": metrics, "train_clips": len(train_set), "eval_clips": len(eval_set), "preset": preset,
            "feature_cache": plan.uses_feature_cache, "feature_cache_off_because": list(plan.no_cache_reasons),
            "skipped_files": skipped.counts(), "layer_weights_plot": plot,
            "layer_weights": _layer_weights(model.head),
            "history": history}


def feature_caches(plan, config, skipped):
    """`(train_cache, eval_cache)`: the frozen backbone's features of the plan's data sets,
    opened, or built on the first run."""
    train, data = config["train"], config["data"]
    print(f"feature cache: {plan.cache_bytes / 1e9:.2f} GB of {plan.cache_tokens} tokens in {plan.cache_folder} "
          f"(one fixed crop per clip: the evaluation clip handling)")
    options = dict(budget_gb=train["cache_budget_gb"], batch_size=train["eval_batch_size"] or train["batch_size"],
                   num_workers=data["num_workers"], skipped=skipped)
    return tuple(FeatureCache.open_or_build(plan.cache_folder / name, plan.backbone, plan.frontend, dataset,
                                            data["clip_seconds"], plan.cache_tokens, **options)
                 for name, dataset in (("train", plan.train_set), ("eval", plan.eval_set)))


def run_callbacks(run_dir, skipped):
    """CSV and TensorBoard logs, latest weights, skipped files (the backups
    are `fit_resumable`'s)."""
    callbacks = [SkippedFilesLogger(skipped),
                 keras.callbacks.CSVLogger(str(run_dir / "log.csv"), append=True),
                 keras.callbacks.ModelCheckpoint(str(run_dir / "checkpoint.weights.h5"), save_weights_only=True)]
    if not _tensorboard_missing():
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "tensorboard")))
    return callbacks


def backup_options(settings):
    """`fit_resumable`'s backup interval from a `train` or `pretrain` section."""
    return {"every_steps": settings["backup_every_steps"], "every_minutes": settings["backup_minutes"]}


@functools.cache
def _tensorboard_missing():
    """The packages TensorBoard logging lacks (Keras' callback writes through
    tf.summary, which needs TensorFlow and TensorBoard); said once per process."""
    missing = [name for name in ("tensorflow", "tensorboard") if importlib.util.find_spec(name) is None]
    if missing:
        print(f"TensorBoard logs off: {' and '.join(missing)} not installed (pip install {' '.join(missing)}); "
              "log.csv has the same numbers.")
    return missing


def predict(model, dataset, clip_seconds, batch_size, num_workers=4, skipped=None, max_label_length=400):
    """Model outputs for every clip of `dataset` (fixed clip handling), with
    the clips that decoded; bad files are skipped and recorded. The encoder
    runs one time chunk of the batch's clips at a time and the head keeps only
    what it pools (`AudioClassifier.predict_long`): memory does not grow with
    `clip_seconds`.

    Returns:
        `(clips, outputs (n, ...), targets)`.
    """
    loader = ClipLoader(dataset, clip_seconds, training=False, max_label_length=max_label_length,
                        patch_seconds=model.backbone.seconds_per_patch(model.frontend))
    clips, outputs, targets = [], [], []
    for indices, waveforms, batch_targets in ordered_batches(loader, batch_size, num_workers, skipped,
                                                             desc=f"evaluating {dataset.name}"):
        outputs.append(model.predict_long(waveforms))
        clips += [dataset.clips[i] for i in indices]
        targets += batch_targets
    if not clips:
        raise UsageError(f"No clip of {dataset.name} could be decoded; see the skipped files.")
    return clips, np.concatenate(outputs), targets


def evaluate(model, dataset, clip_seconds, batch_size, evaluate_config=None, num_workers=4, skipped=None,
             max_label_length=400):
    """The task's final metrics on `dataset`, computed exactly on all clips:
    accuracy (multiclass), macro mAP, mean ROC AUC and d-prime (multilabel), frame-wise micro mAP and
    event-based onset F1 (frame), WER and CER (ctc)."""
    evaluate_config = evaluate_config or DEFAULTS["evaluate"]
    clips, outputs, targets = predict(model, dataset, clip_seconds, batch_size, num_workers, skipped,
                                      max_label_length)
    return task_metrics(dataset.task, clips, outputs, targets, evaluate_config,
                        model.backbone.seconds_per_patch(model.frontend))


def task_metrics(task, clips, outputs, targets, evaluate_config, patch_seconds=None):
    """The final metrics of a task from model outputs and targets per clip; `patch_seconds`, the
    encoder's time patch (`EncoderModel.seconds_per_patch`), is the frame task's time grid."""
    if task == "multiclass":
        return {"accuracy": float(np.mean(np.argmax(outputs, -1) == np.array(targets)))}
    if task == "multilabel":
        scores = multilabel_scores(np.stack(targets), outputs)
        return {name: scores[name] for name in ("mAP", "mAUC", "d_prime")}
    if task == "frame":
        if patch_seconds is None:
            raise UsageError("The frame task's events need the encoder's patch_seconds.")
        probabilities = 1.0 / (1.0 + np.exp(-outputs))
        estimated = {c.path: frames_to_events(p, patch_seconds, evaluate_config["event_threshold"],
                                              evaluate_config["median_filter"])
                     for c, p in zip(clips, probabilities)}
        reference = {c.path: list(c.label) for c in clips}
        events = event_based_f1(reference, estimated, collar=evaluate_config["collar"])
        return {"frame_micro_mAP": mean_average_precision(np.stack(targets), outputs, "micro"),
                "event_f1": events["f1"], "event_precision": events["precision"], "event_recall": events["recall"]}
    if task == "ctc":
        from keras_bat.training.losses import ctc_greedy_decode

        tokenizer = CharTokenizer()
        hypotheses = [tokenizer.decode(ids) for ids in ctc_greedy_decode(outputs)]
        references = [tokenizer.decode(tokenizer.encode(c.label)) for c in clips]
        return error_rates(references, hypotheses)
    raise UsageError(f"Cannot evaluate a {task!r} dataset.")


def save_layer_gate_plot(head, path):
    """Writes the layer-gate bar chart of a gated head; returns its path or `None`."""
    if not hasattr(head, "layer_weights"):
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        return None
    from keras_bat.heads import plot_layer_weights

    figure = plot_layer_weights(head)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return os.fspath(path)


def _layer_weights(head):
    return [float(w) for w in np.asarray(head.layer_weights)] if hasattr(head, "layer_weights") else None


def write_skipped(skipped, path):
    with open(path, "w") as f:
        f.writelines(f"{p}\t{reason}\n" for p, reason in skipped.files)
