"""The procedural sound-event dataset: layouts, labels, and no rewrite of a finished folder."""

import numpy as np

from keras_bat.data import SOUND_CLASSES, csv_dataset, dcase2016_task2, load_audio, write_synthetic_dataset


def test_classification_layout_and_reuse(tmp_path):
    written = write_synthetic_dataset(tmp_path, "multiclass", {"train": 16, "test": 8}, clip_seconds=0.5)
    train = csv_dataset(written["train"], class_names=SOUND_CLASSES)
    assert len(train) == 16 and [c.label for c in train.clips][:8] == list(range(8))
    assert load_audio(train.clips[0].path).shape == (8000,)
    stamp = (tmp_path / "audio" / "train" / "train_00000.wav").stat().st_mtime_ns
    assert write_synthetic_dataset(tmp_path, "multiclass", {"train": 16, "test": 8}, clip_seconds=0.5) == written
    assert (tmp_path / "audio" / "train" / "train_00000.wav").stat().st_mtime_ns == stamp
    before = load_audio(train.clips[0].path)
    write_synthetic_dataset(tmp_path, "multiclass", {"train": 16, "test": 8}, clip_seconds=0.5, seed=1)
    assert not np.array_equal(load_audio(train.clips[0].path), before)


def test_event_layout(tmp_path):
    write_synthetic_dataset(tmp_path, "frame", {"train": 4}, clip_seconds=1.0, max_events=2)
    clips = dcase2016_task2(tmp_path)["train"].clips
    assert all(1 <= len(c.label) <= 2 and all(0 <= on < off <= 1.0 for on, off, _ in c.label) for c in clips)
