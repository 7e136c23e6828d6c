"""Augmentations: properties on every backend, and AudioClassifier training with them."""

import keras
import numpy as np
import pytest

from helpers import to_numpy
from keras_bat.data import AudioAugmentation, colored_noise, mixup, random_gain, spec_augment, time_roll


def _seed(value=0):
    return keras.random.SeedGenerator(value)


def test_random_gain_scales_each_waveform_between_half_and_one_and_a_half():
    x = np.ones((64, 100), "float32")
    y = to_numpy(random_gain(x, _seed()))
    gains = y[:, 0]
    np.testing.assert_allclose(y, gains[:, None] * x, rtol=1e-6)
    assert gains.min() >= 0.5 and gains.max() <= 1.5 and abs(gains.mean() - 1.0) < 0.05
    assert gains.std() > 0.05


def test_colored_noise_at_the_requested_snr():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4000)).astype("float32")
    y = to_numpy(colored_noise(x, 1.0, _seed(), snr_db=(10.0, 10.0)))
    noise = y - x
    snr = 10 * np.log10(np.mean(x**2, axis=1) / np.mean(noise**2, axis=1))
    np.testing.assert_allclose(snr, 10.0, atol=0.05)
    np.testing.assert_array_equal(to_numpy(colored_noise(x, 0.0, _seed())), x)


def test_colored_noise_slope_follows_the_exponent():
    x = np.zeros((1, 32768), "float32")
    x[0, ::2] = 1.0  # any signal: only the noise is examined
    brown = to_numpy(colored_noise(x, 1.0, _seed(), snr_db=(0.0, 0.0), exponent=(2.0, 2.0))) - x
    blue = to_numpy(colored_noise(x, 1.0, _seed(), snr_db=(0.0, 0.0), exponent=(-2.0, -2.0))) - x
    low, high = slice(10, 500), slice(8000, 16000)
    for noise, louder_low in ((brown, True), (blue, False)):
        power = np.abs(np.fft.rfft(noise[0])) ** 2
        assert (power[low].mean() > power[high].mean()) == louder_low


def test_time_roll_is_a_circular_shift_per_example():
    x = np.arange(4 * 100 * 3, dtype="float32").reshape(4, 100, 3)
    y = to_numpy(time_roll(x, _seed(3)))
    shifts = []
    for b in range(4):
        shifts.append(int(np.argmax(y[b, :, 0] == x[b, 0, 0])))
        np.testing.assert_array_equal(y[b], np.roll(x[b], shifts[-1], axis=0))
    assert len(set(shifts)) > 1 and any(shifts), f"time_roll should shift each example its own way: {shifts}"


def test_mixup_mixes_inputs_and_labels_with_the_same_weights():
    x = np.stack([np.full((4, 2), i, "float32") for i in range(6)])
    labels = np.eye(6, dtype="float32")
    mixed_x, mixed_y = (to_numpy(t) for t in mixup(x, labels, 0.8, 1.0, _seed()))
    weights = mixed_y[np.arange(6), ::-1][np.arange(6), np.arange(6)]  # weight of the mirror's label
    for i in range(6):
        j = 5 - i
        w = mixed_y[i, j]
        np.testing.assert_allclose(mixed_x[i], (1 - w) * i + w * j, rtol=1e-5)
        np.testing.assert_allclose(mixed_y[i].sum(), 1.0, rtol=1e-5)
    assert weights.min() >= 0.0 and weights.max() <= 1.0
    same_x, same_y = (to_numpy(t) for t in mixup(x, labels, 0.8, 0.0, _seed()))
    np.testing.assert_array_equal(same_x, x)
    np.testing.assert_array_equal(same_y, labels)
    _, hard = (to_numpy(t) for t in mixup(x, labels, 0.8, 1.0, _seed(), hard_labels=True))
    assert set(np.unique(hard)) <= {0.0, 1.0} and np.all(hard.sum(axis=1) == 2)


def test_spec_augment_masks_bands_narrower_than_the_parameters():
    x = np.ones((16, 50, 20), "float32")
    y = to_numpy(spec_augment(x, freq_mask_param=5, time_mask_param=8, seed=_seed()))
    for example in y:
        masked_bins = np.flatnonzero(example.max(axis=0) == 0)
        masked_frames = np.flatnonzero(example.max(axis=1) == 0)
        assert len(masked_bins) <= 4 and len(masked_frames) <= 7
        for band in (masked_bins, masked_frames):
            if len(band):
                assert band[-1] - band[0] == len(band) - 1  # contiguous
        # Everything outside the two bands is untouched.
        keep = np.ones_like(example, bool)
        keep[:, masked_bins] = False
        keep[masked_frames] = False
        assert np.all(example[keep] == 1.0)
    assert (y == 0).any()


def test_classifier_trains_with_augmentation_and_advances_its_random_state():
    from keras_bat import AudioClassifier, BATBackbone, LogMelSpectrogram
    from keras_bat.heads import CGP

    augmentation = AudioAugmentation(gain=True, color_noise_chance=0.5, time_roll=True, mixup_chance=0.9,
                                     freq_mask_param=8, time_mask_param=16, seed=1)
    model = AudioClassifier(BATBackbone(dim=32, depth=2, num_heads=2), CGP(4, num_prototypes=8),
                            frontend=LogMelSpectrogram(time_frames=96), augmentation=augmentation)
    model.compile()
    before = to_numpy(augmentation.seed_generator.state)
    x = np.random.default_rng(0).normal(size=(8, 16000)).astype("float32")
    history = model.fit(x, np.arange(8) % 4, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert not np.array_equal(to_numpy(augmentation.seed_generator.state), before)
    # Inference sees no augmentation: same outputs twice.
    np.testing.assert_allclose(to_numpy(model.predict(x, verbose=0)), to_numpy(model.predict(x, verbose=0)))
    config = keras.saving.serialize_keras_object(model)
    clone = keras.saving.deserialize_keras_object(config)
    assert clone.augmentation.get_config() == augmentation.get_config()


def test_mixup_refuses_ctc():
    from keras_bat import AudioClassifier, BATBackbone
    from keras_bat.heads import ASRHead

    model = AudioClassifier(BATBackbone(dim=32, depth=2, num_heads=2), ASRHead(lstm_units=8), task="ctc",
                            augmentation=AudioAugmentation(mixup_chance=0.5))
    with pytest.raises(ValueError, match="CTC"):
        model._augment((np.zeros((2, 32, 128), "float32"), {"labels": np.zeros((2, 3), "int32"),
                                                             "label_lengths": np.ones(2, "int32")}))


def test_spectrogram_augmentations_run_roll_then_mixup_then_masks():
    """Masks come after mixup: a masked bin is exactly 0, every other bin holds the mix of the
    example with its mirror, weighted as its labels are."""
    x = np.stack([np.full((20, 16), i + 1.0, "float32") for i in range(8)])  # example i is i + 1 everywhere
    labels = np.eye(8, dtype="float32")
    augmentation = AudioAugmentation(time_roll=True, mixup_chance=1.0, mixup_alpha=0.8, freq_mask_param=8,
                                     time_mask_param=8, seed=0)
    y, mixed_labels = (to_numpy(t) for t in augmentation.augment_spectrograms(x, labels))
    mixed_values = mixed_labels @ np.arange(1.0, 9.0)  # what each example's bins hold after mixup
    assert not np.allclose(mixed_values, np.arange(1.0, 9.0))  # mixup mixed
    for b in range(8):
        unmasked = y[b][y[b] != 0]
        np.testing.assert_allclose(unmasked, mixed_values[b], rtol=1e-5)
    assert (y == 0).any()  # some bins were masked


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_classifier_trains_on_labels_mixed_with_the_inputs_weights(task, monkeypatch):
    """Through `AudioClassifier`'s own training step: each example is mixed with its mirror with
    weight `w`, its labels (integer labels made one-hot first) with the same `w`, and the loss the
    step reports is the loss on those mixed inputs and labels."""
    from keras_bat import AudioClassifier, BATBackbone
    from keras_bat.heads import LinearHead

    rng = np.random.default_rng(21)
    x = rng.uniform(size=(4, 64, 128)).astype("float32")
    y = np.array([0, 1, 2, 1]) if task == "multiclass" else (rng.uniform(size=(4, 3)) < 0.5).astype("float32")
    one_hot = np.eye(3, dtype="float32")[y] if task == "multiclass" else y
    model = AudioClassifier(BATBackbone(dim=32, depth=2, num_heads=2), LinearHead(3, "mean"), task=task,
                            augmentation=AudioAugmentation(mixup_chance=1.0, seed=3))
    model.compile(run_eagerly=True)
    model(x)
    augmented, augment = [], model._augment
    monkeypatch.setattr(model, "_augment", lambda data: augmented.append(augment(data)) or augmented[-1])
    weights = model.get_weights()
    loss = model.train_on_batch(x, y, return_dict=True)["loss"]
    mixed_x, mixed_y = (to_numpy(t) for t in augmented[0][:2])
    mirror_x, mirror_y, drawn = x[::-1], one_hot[::-1], []
    for i in range(4):
        direction = (mirror_x[i] - x[i]).ravel()
        w = float(np.dot((mixed_x[i] - x[i]).ravel(), direction) / np.dot(direction, direction))
        drawn.append(w)
        np.testing.assert_allclose(mixed_x[i], (1 - w) * x[i] + w * mirror_x[i], atol=1e-5)
        np.testing.assert_allclose(mixed_y[i], (1 - w) * one_hot[i] + w * mirror_y[i], atol=1e-5,
                                   err_msg=f"example {i}: inputs mixed with weight {w:.3f}")
    assert np.ptp(drawn) > 0.01 and min(drawn) > 0  # every example mixed, with weights of its own
    model.set_weights(weights)  # the loss of the step, on the weights before it
    expected = model.compute_loss(x=mixed_x, y=mixed_y, y_pred=model(mixed_x, training=True))
    assert float(loss) == pytest.approx(float(to_numpy(expected)), rel=1e-4)
