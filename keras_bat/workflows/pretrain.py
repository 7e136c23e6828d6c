"""Self-supervised pretraining runs: BATPretrainer on a folder of audio (or
any dataset's training split), with logs, checkpoints and the exported
teacher backbone (`<output_dir>/backbone/`, a preset directory for probing)."""

import json
import time
from pathlib import Path

import keras
import yaml

from keras_bat.data.pipeline import SkippedFiles, StreamPosition, make_pipeline
from keras_bat.errors import UsageError
from keras_bat.training.distribution import (ProcessShard, is_writer, own_folder, process_0_says,
                                             setup_distribution, writer_first)
from keras_bat.training.resume import fit_resumable
from keras_bat.workflows.builders import build_splits, require_split
from keras_bat.workflows.probe import backup_options, run_callbacks, write_skipped


def run_pretrain(config):
    """Pretrains as the `pretrain`, `model` and `data` sections say; returns
    (and writes to `results.json`) the loss history and the backbone path."""
    from keras_bat.layers import LogMelSpectrogram
    from keras_bat.models import BATPretrainer, BATBackbone
    from keras_bat.training import WarmupCosineDecay

    shared_dir = Path(config["output_dir"])  # the data it generates and the backups: read by every process
    data, model, settings = config["data"], config["model"], config["pretrain"]
    setup_distribution(config["distribution"], {"pretrain.batch_size": settings["batch_size"]}, config)
    output_dir = own_folder(shared_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / "config.yaml", "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    keras.utils.set_random_seed(config["seed"])
    dataset = require_split(writer_first(build_splits, data, shared_dir), data["train_split"], "training")
    spec = model["backbone"]
    encoder = dict(spec) if isinstance(spec, dict) else BATBackbone.preset_config(spec)
    encoder = {k: v for k, v in encoder.items() if k not in ("name", "trainable", "dtype")}
    encoder["drop_path_rate"] = model["drop_path"]
    if model["dtype"]:
        encoder["dtype"] = model["dtype"]
    start = time.time()
    pretrainer = BATPretrainer(encoder=encoder, decoder_depth=settings["decoder_depth"],
                               decoder_heads=settings["decoder_heads"], time_frames=model["time_frames"],
                               num_views=settings["num_views"], mask_ratio=settings["mask_ratio"],
                               ema_decay_start=settings["ema_decay_start"], ema_decay_end=settings["ema_decay_end"],
                               ema_warmup_steps=settings["ema_warmup_steps"],
                               frontend=LogMelSpectrogram(time_frames=model["time_frames"]), seed=config["seed"])
    schedule = WarmupCosineDecay(settings["lr"], settings["warmup_steps"], settings["steps"], settings["min_lr"])
    pretrainer.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=settings["weight_decay"],
                                                        beta_2=settings["beta2"]))
    skipped = SkippedFiles()
    shard = ProcessShard.of_this_process()

    def train_data(position):
        stream = StreamPosition(shard.local_batch_size(settings["batch_size"]), position, shard)
        return make_pipeline(dataset, settings["batch_size"], data["clip_seconds"], training=True,
                             engine=data["engine"], repeat=True, num_workers=data["num_workers"], seed=config["seed"],
                             skipped=skipped, with_targets=False, stream=stream), stream

    epochs = max(1, -(-settings["steps"] // settings["steps_per_epoch"]))
    export = settings["export"]
    if export not in ("teacher", "student"):
        raise UsageError(f"pretrain.export must be teacher or student. Received: {export!r}")
    snapshots = Snapshots(pretrainer, output_dir / "snapshots", settings["snapshot_steps"], settings["steps_per_epoch"],
                          export)
    history = fit_resumable(pretrainer, train_data, epochs, settings["steps_per_epoch"], shared_dir / "backup",
                            callbacks=[*run_callbacks(output_dir, skipped), snapshots], **backup_options(settings),
                            verbose=settings["verbose"] if is_writer() else 0, shuffle=False)
    backbone_dir = output_dir / "backbone"
    pretrainer.export_backbone(export).save_to_preset(str(backbone_dir))
    write_skipped(skipped, output_dir / "skipped_files.txt")
    results = {"backbone": str(shared_dir / "backbone"), "snapshots": snapshots.written(), "clips": len(dataset),
               "skipped_files": skipped.counts(), "history": history,
               "wall_seconds": round(time.time() - start, 1)}
    with open(output_dir / "results.json", "w") as f:
        json.dump(results, f, indent=2)
    return results


class Snapshots(keras.callbacks.Callback):
    """Exports the teacher (or the student) as a preset directory `<folder>/step_<N>` after
    each of `steps` optimizer steps (epoch ends, so multiples of
    `steps_per_epoch`; step 0 is the random initialisation, exported when
    the run starts): the encoders of a learning curve."""

    def __init__(self, pretrainer, folder, steps, steps_per_epoch, export="teacher"):
        super().__init__()
        steps = sorted(int(step) for step in steps or [])
        if any(step % steps_per_epoch for step in steps):
            raise UsageError(f"pretrain.snapshot_steps must be multiples of pretrain.steps_per_epoch "
                             f"({steps_per_epoch}); received {steps}.")
        self.pretrainer, self.folder, self.steps = pretrainer, Path(folder), steps
        self.steps_per_epoch, self.export = steps_per_epoch, export
        if 0 in steps and process_0_says(not self._path(0).exists()):  # process 0's folder is the run's
            self._export(0)

    def _path(self, step):
        return self.folder / f"step_{step}"

    def _export(self, step):
        self.pretrainer.export_backbone(self.export).save_to_preset(str(self._path(step)))

    def on_epoch_end(self, epoch, logs=None):
        step = (epoch + 1) * self.steps_per_epoch
        if step in self.steps:
            self._export(step)

    def written(self):
        """`{step: preset directory}` of the snapshots on disk."""
        return {step: str(self._path(step)) for step in self.steps if self._path(step).exists()}
