"""docs/extending.md's "Adding a head, an encoder, a dataset or a frontend": a toy of each, written
here and added through the registries alone, runs a whole probe (`keras-bat probe`) from a
folder of recordings to results and a task preset that loads again."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops

from audio_files import tone, write
from helpers import in_one_backend_pass
from keras_bat.cli import main
from keras_bat.data.datasets import READERS, AudioDataset, Clip, register_dataset
from keras_bat.heads import HEADS, register_head
from keras_bat.heads.base import HeadContract
from keras_bat.layers import FRONTENDS, build_frontend, register_frontend
from keras_bat.models import AudioClassifier
from keras_bat.models.encoders import ENCODERS, build_encoder, get_encoder, register_encoder

TONES = {"low": 300.0, "high": 1200.0}  # spectrum bins 3 and 12: bands 0 and 2


def family_modules():
    """The toy family's modules (tests/toy_family/), imported without its `__init__.py`, which
    would register the family for the whole process: the tests here register and unregister it."""
    import importlib
    import sys
    import types

    name = "toy_family_unregistered"
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [str(Path(__file__).parent / "toy_family")]
        sys.modules[name] = package
    return importlib.import_module(f"{name}.toy_backbone"), importlib.import_module(f"{name}.convert")


_toy_backbone, _toy_convert = family_modules()
BandEnergies, PatchMeanEncoder = _toy_backbone.BandEnergies, _toy_backbone.PatchMeanEncoder
load_patch_mean_weights = _toy_convert.load_patch_mean_weights


@keras.saving.register_keras_serializable(package="keras_bat_tests")
class MeanTokenHead(HeadContract, keras.layers.Layer):
    """A toy head: a linear classifier on the class tokens averaged over the layers."""

    @classmethod
    def cache_tokens(cls, pooling, task):
        return "cls"

    @classmethod
    def from_settings(cls, num_classes, task, backbone, **settings):
        return cls(num_classes)

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.fc = keras.layers.Dense(num_classes, name="fc")

    def call(self, features, training=None):
        return self.fc(ops.mean(features["cls_tokens"], axis=1))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def read_tones(root, split_names, fold=None):
    """A toy dataset reader: `<root>/<split>/<class>/*.wav`, classes in `TONES`."""
    names = sorted(TONES)
    return {split: AudioDataset([Clip(str(path), names.index(path.parent.name))
                                 for path in sorted((Path(root) / split).glob("*/*.wav"))], "multiclass", names,
                                name=f"tones/{split}")
            for split in split_names if (Path(root) / split).is_dir()}


@pytest.fixture
def registered():
    """The toys in every registry, taken out again afterwards."""
    register_frontend("band_energies", lambda num_mels, time_frames, dataset, use_kernels:
                      BandEnergies(num_mels, time_frames))
    register_encoder("patch_mean", PatchMeanEncoder, load_patch_mean_weights,
                     presets={"patch_mean_tiny": {"description": "toy", "config": {"dim": 8}}})
    register_head("mean_token", MeanTokenHead)
    register_dataset("tones")(read_tones)
    yield
    for registry, name in ((FRONTENDS, "band_energies"), (ENCODERS, "patch_mean"), (HEADS, "mean_token"),
                           (READERS, "tones")):
        registry.unregister(name)


def write_tones(root, clips_per_class):
    for split, count in clips_per_class.items():
        for name, frequency in TONES.items():
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                write(root / split / name / f"{i}.wav", tone(0.64, frequency=frequency, amplitude=0.1 + 0.05 * i))


def test_a_toy_of_each_kind_runs_a_probe_through_the_registries(tmp_path, registered):
    write_tones(tmp_path / "data", {"train": 6, "test": 3})
    assert type(build_frontend("band_energies", time_frames=64)) is BandEnergies
    backbone = build_encoder("patch_mean", "patch_mean_tiny")
    assert type(backbone.make_frontend(64)) is BandEnergies
    assert get_encoder("patch_mean").backbone_class is PatchMeanEncoder
    out = tmp_path / "run"
    settings = ["data.dataset=tones", "data.options={}", f"data.root={tmp_path / 'data'}", "data.clip_seconds=0.64",
                "data.num_workers=0",
                "model.encoder=patch_mean", "model.backbone=patch_mean_tiny", "model.time_frames=64",
                "head.type=mean_token", "train.batch_size=4", "train.steps=30", "train.steps_per_epoch=10",
                "train.warmup_steps=1", "train.lr=0.05", "train.verbose=0", f"output_dir={out}"]
    assert main(["probe", "--set", *settings]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["feature_cache"] and results["eval_clips"] == 6
    assert results["metrics"]["accuracy"] == 1.0, results["history"]  # the two tones fill different bands
    # The task preset holds the toys and classifies a new recording.
    model = AudioClassifier.from_preset(results["preset"])
    assert (type(model.backbone), type(model.frontend), type(model.head)) == (PatchMeanEncoder, BandEnergies,
                                                                              MeanTokenHead)
    logits = keras.ops.convert_to_numpy(model(np.stack([tone(0.64, frequency=f, amplitude=0.3)
                                                         for f in (TONES["high"], TONES["low"])])))
    assert [model.label_names[i] for i in logits.argmax(-1)] == ["high", "low"]


@in_one_backend_pass("torch", "finding a family's folder")
@pytest.mark.long
def test_a_new_encoder_family_is_one_folder(tmp_path):
    """tests/toy_family/ copied to keras_bat/models/toy/ in a copy of the package, and nothing else
    changed: the command line finds its preset, probes on it and tags with the task preset."""
    import csv
    import os
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    package = tmp_path / "site" / "keras_bat"
    shutil.copytree(root / "keras_bat", package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(root / "tests" / "toy_family", package / "models" / "toy",
                    ignore=shutil.ignore_patterns("__pycache__"))
    write_tones(tmp_path / "data", {"train": 6, "test": 3})
    environment = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}

    def keras_bat(*arguments):
        result = subprocess.run([sys.executable, "-m", "keras_bat", *map(str, arguments)], env=environment,
                                cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    keras_bat("probe", tmp_path / "data", "--backbone", "patch_mean_tiny", "--variant", "lp", "--output-dir", "run",
              "--set", "data.clip_seconds=0.64", "model.time_frames=64", "train.batch_size=4", "train.steps=30",
              "train.warmup_steps=1", "train.lr=0.05", "train.verbose=0", "data.num_workers=0")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["metrics"]["accuracy"] == 1.0, results["history"]  # the two tones fill different bands
    keras_bat("tag", tmp_path / "data" / "test", "--model", results["preset"], "--top-k", "1", "--output", "labels.csv")
    with open(tmp_path / "labels.csv") as file:
        rows = [row for row in csv.DictReader(file) if row["kind"] == "clip"]
    assert len(rows) == 6 and all(Path(row["path"]).parent.name == row["label"] for row in rows), rows


def test_frame_targets_and_events_follow_the_encoders_time_grid(tmp_path, registered):
    """The toy encoder's time patches are 4 frames (0.04 s), not BAT's 16 (0.16 s): a frame-level
    probe trains on targets and decodes events on the encoder's own grid."""
    backbone = build_encoder("patch_mean", "patch_mean_tiny")
    assert backbone.seconds_per_patch() == pytest.approx(0.04)
    assert build_encoder("bat", {"dim": 32, "depth": 1, "num_heads": 2}).seconds_per_patch() == pytest.approx(0.16)
    out = tmp_path / "run"
    assert main(["probe", "--set", "data.options={task: frame, splits: {train: 8, test: 4}, clip_seconds: 0.64}",
                 "data.clip_seconds=0.64", "data.num_workers=0", "model.encoder=patch_mean",
                 "model.backbone=patch_mean_tiny", "model.time_frames=64", "head.type=linear",
                 "train.batch_size=4", "train.steps=4", "train.steps_per_epoch=2", "train.warmup_steps=1",
                 "train.verbose=0", "train.feature_cache=off", f"output_dir={out}"]) == 0
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    assert 0.0 < metrics["frame_micro_mAP"] <= 1.0 and 0.0 <= metrics["event_f1"] <= 1.0


def test_registries_refuse_a_second_entry_of_a_name(registered):
    with pytest.raises(ValueError, match="registered already"):
        register_frontend("band_energies", BandEnergies)
    with pytest.raises(ValueError, match="registered already"):
        register_encoder("patch_mean", PatchMeanEncoder, load_patch_mean_weights)
    with pytest.raises(ValueError, match="registered already"):
        register_head("mean_token", MeanTokenHead)
    with pytest.raises(ValueError, match="registered already"):
        register_dataset("tones")(read_tones)
