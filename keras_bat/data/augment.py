"""Finetuning augmentations in keras.ops (every backend, inside compiled steps).

Waveform augmentations (`random_gain`, `colored_noise`) run before the
frontend, spectrogram augmentations (`time_roll`, `mixup`, `spec_augment`)
after it, in the reference's order. `AudioAugmentation` bundles them for
`AudioClassifier(augmentation=...)`, which applies them in training steps only.
"""

import keras
from keras import ops

from keras_bat.ops.random import draw_rows


def random_gain(waveforms, seed, concentration=10.0):
    """Scales each waveform by `0.5 + Beta(c, c)` (0.5 to 1.5, mean 1)."""
    waveforms = ops.convert_to_tensor(waveforms)
    batch = ops.shape(waveforms)[0]
    gain = 0.5 + draw_rows(lambda rows: keras.random.beta((rows, 1), concentration, concentration, seed=seed), batch)
    return waveforms * ops.cast(gain, waveforms.dtype)


def colored_noise(waveforms, chance, seed, snr_db=(5.0, 25.0), exponent=(-2.0, 2.0)):
    """Adds power-law noise (1/f^e: e=1 pink, 2 brown, -1 blue) to a random
    `chance` of the waveforms, at a random SNR in `snr_db`."""
    waveforms = ops.convert_to_tensor(waveforms)
    batch, samples = ops.shape(waveforms)[0], ops.shape(waveforms)[1]
    exponents = draw_rows(lambda rows: keras.random.uniform((rows, 1), *exponent, seed=seed), batch)
    snr = draw_rows(lambda rows: keras.random.uniform((rows, 1), *snr_db, seed=seed), batch)
    white = draw_rows(lambda rows: keras.random.normal((rows, samples), seed=seed), batch)
    real, imag = ops.rfft(white)
    frequencies = ops.cast(ops.arange(1, ops.shape(real)[1] + 1), "float32")[None]
    shaping = ops.power(frequencies, -exponents / 2.0)  # amplitude, hence half the power exponent
    noise = ops.irfft((real * shaping, imag * shaping), fft_length=samples)
    noise = noise / (ops.sqrt(ops.mean(noise**2, axis=-1, keepdims=True)) + 1e-8)
    signal_rms = ops.sqrt(ops.mean(ops.cast(waveforms, "float32") ** 2, axis=-1, keepdims=True))
    applied = ops.cast(draw_rows(lambda rows: keras.random.uniform((rows, 1), seed=seed), batch) < chance, "float32")
    amplitude = applied * signal_rms / ops.power(10.0, snr / 20.0)
    return waveforms + ops.cast(amplitude * noise, waveforms.dtype)


def time_roll(spectrograms, seed):
    """Rolls each spectrogram `(batch, time, freq)` circularly by a random
    number of frames."""
    spectrograms = ops.convert_to_tensor(spectrograms)
    batch, frames = ops.shape(spectrograms)[0], ops.shape(spectrograms)[1]
    shifts = draw_rows(lambda rows: keras.random.randint((rows, 1), 0, frames, seed=seed), batch)
    source = ops.mod(ops.arange(frames)[None] - shifts, frames)  # (batch, time)
    return ops.take_along_axis(spectrograms, source[:, :, None], axis=1)


def mixup(inputs, labels, alpha, chance, seed, hard_labels=False):
    """Mixes each example with its mirror in the batch (`x[::-1]`) with weight
    `a ~ Beta(alpha, alpha)`, for a random `chance` of the examples. (Under a
    tf.distribute strategy the batch is each replica's part of it.)

    Labels are mixed with the same weights (soft) or added and clipped to 1
    (`hard_labels`). Labels must be one-hot, multi-hot or frame targets.
    """
    inputs = ops.convert_to_tensor(inputs)
    batch = ops.shape(inputs)[0]
    weight = draw_rows(lambda rows: keras.random.beta((rows,), alpha, alpha, seed=seed), batch)
    weight = weight * ops.cast(draw_rows(lambda rows: keras.random.uniform((rows,), seed=seed), batch) < chance,
                               weight.dtype)

    def mix(x, w):
        w = ops.reshape(ops.cast(w, x.dtype), (-1,) + (1,) * (len(x.shape) - 1))
        return (1.0 - w) * x + w * ops.flip(x, axis=0)

    labels = ops.cast(labels, "float32")
    if hard_labels:
        applied = ops.reshape(ops.cast(weight > 0, "float32"), (-1,) + (1,) * (len(labels.shape) - 1))
        mixed_labels = labels + applied * ops.flip(labels, axis=0)
    else:
        mixed_labels = mix(labels, weight)
    return mix(inputs, weight), ops.clip(mixed_labels, 0.0, 1.0)


def spec_augment(spectrograms, freq_mask_param, time_mask_param, seed, repeats=1):
    """SpecAugment: per example, `repeats` frequency masks of width in
    `[0, freq_mask_param)` and time masks of width in `[0, time_mask_param)`,
    set to 0, as torchaudio's `FrequencyMasking` / `TimeMasking` with iid masks."""
    spectrograms = ops.convert_to_tensor(spectrograms)
    for _ in range(repeats):
        if freq_mask_param > 0:
            spectrograms = _band_mask(spectrograms, 2, freq_mask_param, seed)
        if time_mask_param > 0:
            spectrograms = _band_mask(spectrograms, 1, time_mask_param, seed)
    return spectrograms


def _band_mask(x, axis, max_width, seed):
    batch, size = ops.shape(x)[0], ops.shape(x)[axis]
    width = ops.floor(draw_rows(lambda rows: keras.random.uniform((rows, 1), seed=seed), batch) * max_width)
    start = ops.floor(draw_rows(lambda rows: keras.random.uniform((rows, 1), seed=seed), batch)
                      * (ops.cast(size, "float32") - width))
    position = ops.cast(ops.arange(size), "float32")[None]
    keep = ops.logical_or(position < start, position >= start + width)  # (batch, size)
    keep = ops.expand_dims(keep, 2 if axis == 1 else 1)
    return ops.where(keep, x, ops.zeros_like(x))


@keras.saving.register_keras_serializable(package="keras_bat")
class AudioAugmentation(keras.layers.Layer):
    """The finetuning augmentations of the paper's recipes, in one layer.

    `AudioClassifier(augmentation=AudioAugmentation(...))` calls
    `augment_waveforms` before its frontend and `augment_spectrograms` after
    it, in training steps only.

    Args:
        gain: bool, random gain. Defaults to `False`.
        color_noise_chance: float, chance of coloured noise (0.3 in the
            paper's recipes). Defaults to `0.0`.
        time_roll: bool, random circular time shift. Defaults to `False`.
        mixup_chance: float, chance of mixup per example (0.9). Defaults to `0.0`.
        mixup_alpha: float, Beta parameter (0.8). Defaults to `0.8`.
        hard_mixup_labels: bool. Defaults to `False`.
        freq_mask_param, time_mask_param: int, SpecAugment widths (16, 64 or
            32); 0 disables. Defaults to `0`.
        mask_repeats: int, SpecAugment rounds. Defaults to `1`.
        seed: int or `None`.
    """

    def __init__(self, gain=False, color_noise_chance=0.0, time_roll=False, mixup_chance=0.0, mixup_alpha=0.8,
                 hard_mixup_labels=False, freq_mask_param=0, time_mask_param=0, mask_repeats=1, seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.gain = gain
        self.color_noise_chance = color_noise_chance
        self.time_roll = time_roll
        self.mixup_chance = mixup_chance
        self.mixup_alpha = mixup_alpha
        self.hard_mixup_labels = hard_mixup_labels
        self.freq_mask_param = freq_mask_param
        self.time_mask_param = time_mask_param
        self.mask_repeats = mask_repeats
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True  # no weights

    @property
    def uses_mixup(self):
        return self.mixup_chance > 0

    def augment_waveforms(self, waveforms):
        if self.gain:
            waveforms = random_gain(waveforms, self.seed_generator)
        if self.color_noise_chance > 0:
            waveforms = colored_noise(waveforms, self.color_noise_chance, self.seed_generator)
        return waveforms

    def augment_spectrograms(self, spectrograms, labels):
        if self.time_roll:
            spectrograms = time_roll(spectrograms, self.seed_generator)
        if self.uses_mixup:
            spectrograms, labels = mixup(spectrograms, labels, self.mixup_alpha, self.mixup_chance,
                                         self.seed_generator, self.hard_mixup_labels)
        spectrograms = spec_augment(spectrograms, self.freq_mask_param, self.time_mask_param,
                                    self.seed_generator, self.mask_repeats)
        return spectrograms, labels

    def call(self, inputs):
        """Waveform augmentations (the spectrogram ones need labels: see
        `augment_spectrograms`)."""
        return self.augment_waveforms(inputs)

    def get_config(self):
        config = super().get_config()
        config.update({
            "gain": self.gain, "color_noise_chance": self.color_noise_chance, "time_roll": self.time_roll,
            "mixup_chance": self.mixup_chance, "mixup_alpha": self.mixup_alpha,
            "hard_mixup_labels": self.hard_mixup_labels, "freq_mask_param": self.freq_mask_param,
            "time_mask_param": self.time_mask_param, "mask_repeats": self.mask_repeats, "seed": self.seed,
        })
        return config
