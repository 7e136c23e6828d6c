"""Probe feature cache: bfloat16 storage, size refusal, and probes on the cache
equal to probes through the encoder within bfloat16 rounding."""

import dataclasses

import keras
import numpy as np
import pytest

from helpers import to_numpy
from keras_bat import AudioClassifier, BATBackbone, LogMelSpectrogram
from keras_bat.data import AudioDataset, Clip, SOUND_CLASSES, csv_dataset, write_synthetic_dataset
from keras_bat.workflows.feature_cache import (FeatureCache, estimate_bytes, from_bfloat16_bits, to_bfloat16_bits)
from keras_bat.data.pipeline import ClipLoader
from keras_bat.heads import CGP, LinearHead


def test_bfloat16_bits_round_to_nearest_even():
    x = np.array([1.0, -2.5, 1.0 + 2**-8, 1.0 + 3 * 2**-8, 3.14159265, 0.0], "float32")
    back = from_bfloat16_bits(to_bfloat16_bits(x))
    np.testing.assert_array_equal(back[[0, 1, 5]], x[[0, 1, 5]])
    assert back[2] == 1.0  # a tie rounds to the even mantissa
    assert back[3] == 1.0 + 4 * 2**-8
    assert abs(back[4] - x[4]) <= 2**-8 * 4


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    paths = write_synthetic_dataset(folder, splits={"train": 12}, clip_seconds=0.64)
    return csv_dataset(paths["train"], class_names=SOUND_CLASSES)


def _backbone():
    keras.utils.set_random_seed(1)
    return BATBackbone(dim=32, depth=2, num_heads=2)


def test_size_estimate_and_refusal(synthetic, tmp_path):
    backbone = _backbone()
    assert estimate_bytes(10, backbone, 64, "cls") == 2 * 10 * 2 * 32
    assert estimate_bytes(10, backbone, 64, "all") == 2 * 10 * (2 * 32 + 2 * 4 * 8 * 32)
    with pytest.raises(ValueError, match="GB .*budget"):
        FeatureCache.build(tmp_path / "c", backbone, LogMelSpectrogram(time_frames=64), synthetic, 0.64,
                           budget_gb=1e-6)
    assert not (tmp_path / "c").exists()


@pytest.mark.long
def test_cached_features_give_the_uncached_logits(synthetic, tmp_path):
    backbone, frontend = _backbone(), LogMelSpectrogram(time_frames=64)
    cache = FeatureCache.build(tmp_path / "cache", backbone, frontend, synthetic, 0.64, tokens="all",
                               batch_size=5, verbose=False)
    assert len(cache) == 12 and cache.meta["clip_indices"] == list(range(12))
    patch_tokens = cache.features["patch_tokens"]
    assert patch_tokens.dtype == np.uint16 and patch_tokens.shape == (12, 2, 4, 8, 32)
    head = CGP(8, num_prototypes=16, dropout=0.0)
    uncached = AudioClassifier(backbone, head, frontend=frontend)
    cached = AudioClassifier(None, head)
    loader = ClipLoader(synthetic, 0.64, training=False)
    waveforms = np.stack([loader(i)[0] for i in range(12)])
    expected = to_numpy(uncached.predict(waveforms, verbose=0))
    features, targets = FeatureCache(tmp_path / "cache").batch(np.arange(12))
    np.testing.assert_array_equal(targets, [c.label for c in synthetic.clips])
    actual = to_numpy(cached.predict(features, verbose=0))
    # bfloat16 keeps 8 bits of mantissa: features within 2^-8 relative, logits about as close.
    assert np.max(np.abs(actual - expected)) <= 2e-2 * np.max(np.abs(expected))


def test_probe_trained_on_the_cache_equals_the_uncached_probe(synthetic, tmp_path):
    backbone, frontend = _backbone(), LogMelSpectrogram(time_frames=64)
    cache = FeatureCache.build(tmp_path / "cache", backbone, frontend, synthetic, 0.64, tokens="cls", verbose=False)
    assert set(cache.features) == {"cls_tokens"}
    heads = [LinearHead(8, use_norm=True), LinearHead(8, use_norm=True)]
    models = [AudioClassifier(backbone, heads[0], frontend=frontend), AudioClassifier(None, heads[1])]
    loader = ClipLoader(synthetic, 0.64, training=False)
    waveforms = np.stack([loader(i)[0] for i in range(12)])
    labels = np.array([c.label for c in synthetic.clips])
    models[0](waveforms[:1])
    models[1](cache.batch([0])[0])
    heads[1].set_weights(heads[0].get_weights())
    initial = [w.copy() for w in heads[0].get_weights()]
    for model in models:
        model.compile(optimizer=keras.optimizers.SGD(0.05))
    models[0].fit(waveforms, labels, batch_size=4, epochs=2, shuffle=False, verbose=0)
    models[1].fit(cache.dataset(4, shuffle=False), epochs=2, verbose=0, shuffle=False)
    for uncached_w, cached_w, start in zip(heads[0].get_weights(), heads[1].get_weights(), initial):
        update = np.max(np.abs(uncached_w - start))
        assert update > 1e-3
        assert np.max(np.abs(cached_w - uncached_w)) <= 3e-2 * update


def test_bad_files_are_left_out_of_the_cache(synthetic, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_text("not audio")
    clips = synthetic.clips[:3] + [Clip(str(broken), 0)] + synthetic.clips[3:5]
    dataset = AudioDataset(clips, "multiclass", list(SOUND_CLASSES), "with_bad")
    cache = FeatureCache.build(tmp_path / "cache", _backbone(), LogMelSpectrogram(time_frames=64), dataset, 0.64,
                               tokens="cls", batch_size=2, verbose=False)
    assert len(cache) == 5 and cache.meta["clip_indices"] == [0, 1, 2, 4, 5]
    assert cache.features["cls_tokens"].shape == (5, 2, 32)
    batches = cache.dataset(2, shuffle=True, steps_per_epoch=7, seed=0)
    assert len(batches) == 7 and all(len(batches[i][1]) == 2 for i in range(7))


def test_a_cache_is_reused_only_for_the_same_encoder_and_clips(synthetic, tmp_path):
    backbone, frontend = _backbone(), LogMelSpectrogram(time_frames=64)
    first = FeatureCache.open_or_build(tmp_path / "c", backbone, frontend, synthetic, 0.64, "cls", verbose=False)
    first_features = np.array(first.features["cls_tokens"])  # a copy: a rebuild rewrites the files
    stamp = (tmp_path / "c" / "cls_tokens.npy").stat().st_mtime_ns
    again = FeatureCache.open_or_build(tmp_path / "c", backbone, frontend, synthetic, 0.64, "cls", verbose=False)
    assert (tmp_path / "c" / "cls_tokens.npy").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.features["cls_tokens"], first_features)
    other = BATBackbone(dim=32, depth=2, num_heads=2)  # same shapes, other weights
    rebuilt = FeatureCache.open_or_build(tmp_path / "c", other, frontend, synthetic, 0.64, "cls", verbose=False)
    assert rebuilt.meta["source"]["encoder"] != first.meta["source"]["encoder"]
    assert not np.array_equal(rebuilt.features["cls_tokens"], first_features)
    rebuilt_features = np.array(rebuilt.features["cls_tokens"])
    # The same files, other segments (BirdSet cuts one soundscape into many): another cache.
    segments = AudioDataset([dataclasses.replace(c, offset=0.2) for c in synthetic.clips], synthetic.task,
                            synthetic.class_names, synthetic.name)
    moved = FeatureCache.open_or_build(tmp_path / "c", other, frontend, segments, 0.64, "cls", verbose=False)
    assert not np.array_equal(moved.features["cls_tokens"], rebuilt_features)
    # The same segments, other labels: the stored targets must follow.
    relabelled = AudioDataset([dataclasses.replace(c, label=(c.label + 1) % len(synthetic.class_names))
                               for c in segments.clips], synthetic.task, synthetic.class_names, synthetic.name)
    targets = np.array(moved.targets)
    relabelled_cache = FeatureCache.open_or_build(tmp_path / "c", other, frontend, relabelled, 0.64, "cls",
                                                  verbose=False)
    assert not np.array_equal(np.array(relabelled_cache.targets), targets)


@pytest.mark.parametrize("batch_size", [5, 12, 16])
def test_evaluation_batches_cover_every_clip_in_order(synthetic, tmp_path, batch_size):
    """Batches that do not divide the clips (12 in 5s, or fewer clips than one batch): every clip's
    outputs once, in order, equal to the model's on the clip alone; the same for a cache's batches."""
    from keras_bat.workflows.probe import predict

    backbone, frontend = _backbone(), LogMelSpectrogram(time_frames=64)
    model = AudioClassifier(backbone, CGP(8, num_prototypes=16), frontend=frontend)
    loader = ClipLoader(synthetic, 0.64, training=False)
    waveforms = np.stack([loader(i)[0] for i in range(12)])
    expected = np.concatenate([to_numpy(model(waveforms[i:i + 1])) for i in range(12)])
    clips, outputs, targets = predict(model, synthetic, 0.64, batch_size, num_workers=2)
    assert clips == synthetic.clips and targets == [c.label for c in synthetic.clips]
    np.testing.assert_allclose(outputs, expected, atol=1e-5)

    cache = FeatureCache.build(tmp_path / "cache", backbone, frontend, synthetic, 0.64, tokens="all",
                               batch_size=batch_size, verbose=False)
    batches = list(cache.dataset(batch_size, shuffle=False))
    assert [len(y) for _, y in batches] == [min(batch_size, 12 - i) for i in range(0, 12, batch_size)]
    cached = AudioClassifier(None, model.head)
    from_cache = np.concatenate([to_numpy(cached(x)) for x, _ in batches])
    assert np.max(np.abs(from_cache - expected)) <= 2e-2 * np.max(np.abs(expected))  # bfloat16 features
