"""Pipelines: clip handling, sampling, bad files skipped and counted, `fit` on every backend."""

import itertools

import keras
import numpy as np
import pytest

from audio_files import bad_files, write
from helpers import require_module
from keras_bat.data import (AudioDataset, Clip, ClipLoader, Sampler, SkippedFiles, SkippedFilesLogger,
                            make_pipeline)
from keras_bat.data.pipeline import StreamPosition
from keras_bat.training.distribution import ProcessShard


def _ramp_dataset(tmp_path, lengths, task="multiclass"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    clips = []
    for i, n in enumerate(lengths):
        samples = (np.arange(1, n + 1) / (n + 1)).astype("float32")  # distinct, positive
        clips.append(Clip(write(tmp_path / f"{i}.wav", samples, subtype="FLOAT"), i % 2))
    return AudioDataset(clips, task, ["a", "b"], "ramps")


def test_eval_clips_are_cut_or_padded_from_the_start(tmp_path):
    dataset = _ramp_dataset(tmp_path, [8000, 24000])
    loader = ClipLoader(dataset, 1.0, training=False)
    short, label = loader(0)
    assert short.shape == (16000,) and label == 0
    np.testing.assert_array_equal(short[8000:], 0.0)
    np.testing.assert_allclose(short[:8000], np.arange(1, 8001) / 8001, rtol=1e-6)
    long, _ = loader(1)
    np.testing.assert_allclose(long, np.arange(1, 16001) / 24001, rtol=1e-6)


def test_training_clips_are_rolled_then_cropped_or_padded(tmp_path):
    dataset = _ramp_dataset(tmp_path, [8000, 24000])
    loader = ClipLoader(dataset, 1.0, training=True)
    full = (np.arange(1, 24001) / 24001).astype("float32")
    starts = set()
    for seed in range(20):
        short, _ = loader(0, seed)
        nonzero = np.flatnonzero(short)
        assert len(nonzero) == 8000 and short.shape == (16000,)
        # The clip is one contiguous block (rolled within the padding) of a rolled copy.
        assert nonzero[-1] - nonzero[0] == 7999
        long, _ = loader(1, seed)
        # A window of 16000 consecutive samples of the circularly rolled file.
        position = int(np.argmin(np.abs(full - long[0])))
        np.testing.assert_allclose(long, np.roll(full, -position)[:16000], rtol=1e-6)
        starts.add(position)
    assert len(starts) > 10
    np.testing.assert_array_equal(loader(1, 3)[0], loader(1, 3)[0])  # a seed fixes the randomness


def test_training_noise(tmp_path):
    dataset = _ramp_dataset(tmp_path, [16000])
    clean = ClipLoader(dataset, 1.0, training=True)(0, 5)[0]
    noisy = ClipLoader(dataset, 1.0, training=True, noise_std=0.02)(0, 5)[0]
    assert abs(np.std(noisy - clean) - 0.02) < 1e-3


def test_sampler_orders():
    sampler = Sampler(6, shuffle=True, seed=1)
    first, second = sampler.order(0)[0], sampler.order(1)[0]
    assert sorted(first) == list(range(6)) and not np.array_equal(first, second)
    np.testing.assert_array_equal(sampler.order(0)[0], first)
    np.testing.assert_array_equal(Sampler(4, shuffle=False).order(3)[0], [0, 1, 2, 3])
    weights = np.array([0.7, 0.1, 0.1, 0.1])
    picks = np.concatenate([Sampler(4, weights=weights, samples_per_epoch=2, seed=0).order(e)[0]
                            for e in range(400)])
    counts = np.bincount(picks, minlength=4) / 400
    assert counts[0] > 0.85 and all(len(set(Sampler(4, weights=weights, samples_per_epoch=2).order(e)[0])) == 2
                                   for e in range(5))
    with pytest.raises(ValueError, match="no clips"):
        Sampler(0)


@pytest.mark.parametrize("engine", ["tf", "grain"])
def test_bad_files_are_skipped_and_counted(tmp_path, engine):
    if engine == "grain":
        require_module("grain")  # the [data] extra, installed with [test]
    good = _ramp_dataset(tmp_path / "good", [16000] * 4)
    bad = bad_files(tmp_path / "bad")
    clips = good.clips + [Clip(path, 0) for path in bad.values()]
    dataset = AudioDataset(clips, "multiclass", ["a", "b"])
    skipped = SkippedFiles()
    batches = list(make_pipeline(dataset, 3, 1.0, training=False, engine=engine, skipped=skipped))
    waveforms = np.concatenate([keras.ops.convert_to_numpy(x) for x, _ in batches])
    # Good files and the long one (read within max_duration) come through.
    assert len(waveforms) == 5 and np.isfinite(waveforms).all()
    assert len(skipped) == 9
    counts = skipped.counts()
    assert counts["file not found"] == 1 and counts["NaN or inf samples"] == 2
    assert {path for path, _ in skipped.files} == set(bad.values()) - {bad["too long"]}
    logger = SkippedFilesLogger(skipped, verbose=False)
    logs = {}
    logger.on_epoch_end(0, logs)
    assert logs["skipped_files"] == 9.0


@pytest.mark.parametrize("engine", ["tf", "grain"])
def test_pipelines_feed_fit(tmp_path, engine):
    if engine == "grain":
        require_module("grain")  # the [data] extra, installed with [test]
    dataset = _ramp_dataset(tmp_path, [8000, 16000, 20000, 12000] * 2)
    data = make_pipeline(dataset, 4, 0.5, training=True, engine=engine, repeat=True, seed=3)
    model = keras.Sequential([keras.Input((8000,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(data, epochs=2, steps_per_epoch=3, verbose=0, shuffle=False)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()


def test_frame_and_ctc_targets_in_batches(tmp_path):
    path = write(tmp_path / "a.wav", np.full(16000, 0.1, "float32"))
    frames = AudioDataset([Clip(path, ((0.0, 0.3, 1),))], "frame", ["x", "y"])
    x, y = next(iter(make_pipeline(frames, 1, 0.64, training=False)))
    assert tuple(x.shape) == (1, 10240) and tuple(y.shape) == (1, 4, 2)
    np.testing.assert_array_equal(y.numpy()[0, :, 1], [1, 1, 0, 0])
    speech = AudioDataset([Clip(path, "hi there")], "ctc", [])
    x, y = next(iter(make_pipeline(speech, 1, 1.0, training=False, max_label_length=12)))
    assert tuple(y["labels"].shape) == (1, 12) and int(y["label_lengths"][0]) == 8
    unlabeled = AudioDataset([Clip(path, None)], "unlabeled", [])
    x = next(iter(make_pipeline(unlabeled, 1, 1.0, training=True, with_targets=False)))
    assert tuple(x.shape) == (1, 16000)


@pytest.mark.parametrize("engine", ["tf", "grain"])
def test_process_shards_make_up_the_single_process_batches(tmp_path, engine):
    """Two processes' pipelines each read half of every batch; side by side they are the one-process
    batches, clip for clip and with the same random clip handling, across epochs and from a resumed
    position."""
    if engine == "grain":
        require_module("grain")  # the [data] extra, installed with [test]
    dataset = _ramp_dataset(tmp_path, [8000, 16000, 20000, 12000, 24000] * 2)  # 10 clips: 2.5 batches an epoch

    def batches(start, shard=None, count=7):
        stream = StreamPosition(4 // (shard.count if shard else 1), start, shard)
        data = make_pipeline(dataset, 4, 0.5, training=True, engine=engine, repeat=True, seed=3, stream=stream)
        return [keras.ops.convert_to_numpy(x) for (x, _), _ in zip(data, range(count))]

    single = batches(0)
    parts = [batches(0, ProcessShard(index, 2)) for index in (0, 1)]
    for k, whole in enumerate(single):
        np.testing.assert_array_equal(np.concatenate([parts[0][k], parts[1][k]]), whole)
    resumed = [batches(StreamPosition(2, 0, ProcessShard(index, 2)).after(3), ProcessShard(index, 2), 4)
               for index in (0, 1)]
    for k in range(4):
        np.testing.assert_array_equal(np.concatenate([resumed[0][k], resumed[1][k]]), single[3 + k])


def test_process_shards_are_disjoint_and_cover_the_stream():
    for count, batch_size, start in ((2, 8, 0), (4, 8, 13), (3, 6, 7)):
        streams = [StreamPosition(batch_size // count, start, ProcessShard(index, count)) for index in range(count)]
        taken = [list(itertools.islice(stream.positions(), 50)) for stream in streams]
        local = batch_size // count  # process i's positions: the i-th slice of `local` in each batch
        assert all((p % batch_size) // local == i for i, own in enumerate(taken) for p in own)
        every = sorted(p for own in taken for p in own)
        assert len(set(every)) == len(every)  # disjoint
        end = min(own[-1] for own in taken)
        assert set(range(start, end)) <= set(every) and min(every) == start  # together, every position
    # Undecoded clips: a process's stream moves on to its own next position.
    stream = StreamPosition(2, 0, ProcessShard(1, 2))
    assert [stream.position(i) for i in range(5)] == [2, 3, 6, 7, 10]
    stream.record_undecoded(3)
    assert stream.after(1) == 7 and stream.after(2) == 11  # batches [2, 6], [7, 10]
    with pytest.raises(ValueError, match="does not split over 3 processes"):
        ProcessShard(0, 3).local_batch_size(8)
