"""Audio frontends: waveform -> log-mel spectrogram, in keras.ops only.

Filter banks and windows are built once in NumPy; the layers only run
keras.ops at call time, so they work on every backend and under jit.
"""

import keras
import numpy as np
from keras import ops

from keras_bat.errors import UsageError
from keras_bat.layers.base import Layer
from keras_bat.ops.frontend import (filter_bank_product, log_mel_spectrogram, normalise_db, power_to_db, rfft_power,
                                    stft_power)
from keras_bat.registry import Registry

# Filter banks and windows in NumPy --------------------------------------------


def htk_mel_filter_bank(num_freqs, num_mels, sample_rate, f_min=0.0, f_max=None):
    """Triangular HTK-scale mel filter bank without area normalisation.

    Args:
        num_freqs: int, number of linear frequency bins (`n_fft // 2 + 1`).
        num_mels: int, number of mel bands.
        sample_rate: int, sample rate in Hz.
        f_min: float, lowest band edge in Hz. Defaults to `0.0`.
        f_max: float, highest band edge in Hz. Defaults to `sample_rate / 2`.

    Returns:
        float32 array `(num_freqs, num_mels)`.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    all_freqs = np.linspace(0, sample_rate // 2, num_freqs)

    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    mel_points = np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), num_mels + 2)
    hz_points = mel_to_hz(mel_points)
    widths = np.diff(hz_points)  # num_mels + 1
    slopes = hz_points[None, :] - all_freqs[:, None]  # F, num_mels + 2
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    return np.maximum(0.0, np.minimum(rising, falling)).astype("float32")


def kaldi_mel_filter_bank(num_mels, padded_window_size, sample_rate, low_freq=20.0, high_freq=0.0):
    """Kaldi's mel filter bank (`mel = 1127 ln(1 + f / 700)`), padded to `n/2 + 1` bins.

    Args:
        num_mels: int, number of mel bins.
        padded_window_size: int, FFT length.
        sample_rate: int, sample rate in Hz.
        low_freq: float, lowest band edge in Hz. Defaults to `20.0`.
        high_freq: float, highest band edge; `<= 0` counts back from Nyquist.

    Returns:
        float32 array `(padded_window_size // 2 + 1, num_mels)`.
    """
    # Computed in float32 like Kaldi and torchaudio: narrow low bands cover few
    # FFT bins, so float64 weights would shift them by up to 1e-5.
    nyquist = 0.5 * sample_rate
    high_freq = high_freq if high_freq > 0 else nyquist + high_freq
    f32 = np.float32

    def mel(f):
        return f32(1127.0) * np.log(f32(1.0) + f / f32(700.0))

    mel_low = float(1127.0 * np.log(1.0 + low_freq / 700.0))
    mel_high = float(1127.0 * np.log(1.0 + high_freq / 700.0))
    delta = f32((mel_high - mel_low) / (num_mels + 1))
    band = np.arange(num_mels, dtype=f32)[:, None]
    left = f32(mel_low) + band * delta
    center = f32(mel_low) + (band + f32(1.0)) * delta
    right = f32(mel_low) + (band + f32(2.0)) * delta
    bin_width = f32(sample_rate / padded_window_size)
    bin_mels = mel(bin_width * np.arange(padded_window_size // 2, dtype=f32))[None, :]
    rising = (bin_mels - left) / (center - left)
    falling = (right - bin_mels) / (right - center)
    banks = np.maximum(f32(0.0), np.minimum(rising, falling))  # num_mels, num_fft_bins
    banks = np.pad(banks, ((0, 0), (0, 1)))  # the Nyquist bin gets no weight
    return banks.T.astype("float32")


def hann_window(length, periodic=True):
    """Hann window as float32 NumPy array (periodic by default, as in STFTs)."""
    n = np.arange(length, dtype="float64")
    denominator = length if periodic else length - 1
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / denominator)).astype("float32")


def _check_waveforms(waveforms, min_samples, layer_name):
    shape = tuple(waveforms.shape)
    if len(shape) != 2:
        raise UsageError(
            f"{layer_name} expects waveforms of shape (batch, samples). "
            f"Received shape: {shape}"
        )
    if shape[1] is not None and shape[1] < min_samples:
        raise UsageError(
            f"{layer_name} needs at least {min_samples} samples per waveform. "
            f"Received shape: {shape}"
        )


def fit_frames(spectrogram, time_frames):
    """Zero-pads or crops the time axis of `(batch, frames, bins)` to `time_frames`."""
    frames = spectrogram.shape[1]
    if time_frames is None or frames == time_frames:
        return spectrogram
    if frames is None:  # traced for any length (e.g. an exported model): pad by the most needed, crop
        fitted = ops.pad(spectrogram, [[0, 0], [0, time_frames], [0, 0]])[:, :time_frames, :]
        return ops.reshape(fitted, (-1, time_frames, spectrogram.shape[2]))  # the length, known again
    if frames > time_frames:
        return spectrogram[:, :time_frames, :]
    return ops.pad(spectrogram, [[0, 0], [0, time_frames - frames], [0, 0]])


# Layers -------------------------------------------------------------------------


class Frontend(Layer):
    """Base of the frontends: waveforms `(batch, samples)` -> float32 `(batch, frames, num_mels)`.

    A frontend sets `sample_rate`, `num_mels`, `hop_length`, `window_length` (samples per
    frame), `first_frame_center` (samples) and `time_frames` (`None`, or the frames it pads
    or crops to), and implements `call` and `num_frames(num_samples)`. The streaming
    methods below let `keras-bat embed` run it a window at a time; their defaults suit a
    frontend without clip-wide normalisation whose frames depend only on the samples they
    read (override `window_frames` otherwise). `register_frontend` makes it an encoder's
    `frontend`.
    """

    def num_frames(self, num_samples):
        raise NotImplementedError

    # --- Streaming: a long recording a window of frames at a time ------------------------
    # `frame_span` says which samples frames read; `window_frames` turns such a window into the
    # frames before the clip-wide normalisation, which `normalise_frames` applies with the clip's
    # `frame_statistics` (gathered over all windows first). Equal to calling the layer on the clip.

    def frame_span(self, first_frame, num_frames):
        """Samples `[start, stop)` that frames `first_frame` ... `first_frame + num_frames - 1`
        read (outside `[0, samples)` where the layer pads the clip)."""
        start = first_frame * self.hop_length + int(self.first_frame_center) - self.window_length // 2
        return start, start + (num_frames - 1) * self.hop_length + self.window_length

    normalises_per_clip = False  # whether `normalise_frames` needs the whole clip's statistics

    def window_frames(self, window):
        """Frames `(frames, num_mels)` of a window `(samples,)` laid out by `frame_span`."""
        return self(ops.convert_to_tensor(window, "float32")[None])[0]

    def frame_statistics(self, frames):
        """What `normalise_frames` needs of the whole clip, from some of its frames."""
        return None

    def merge_statistics(self, first, second):
        return None

    def normalise_frames(self, frames, statistics):
        return frames

    def stream_frames(self, read, num_samples, chunk_frames, keep_frames=None):
        """The frames of a clip of `num_samples` samples, `chunk_frames` at a time, equal to the
        layer's frames of the whole clip (before `time_frames`' crop or pad); `read(start,
        stop)` gives the clip's samples `[start, stop)` (reflected beyond its ends, as
        `keras_bat.data.audio.load_window` and `waveform_window` read them), and
        `keep_frames` how many of its frames to stream (all by default). A frontend that
        normalises per clip reads the clip twice: the statistics of all its frames first.
        Every window is zero-padded to a full chunk's samples (each frame reads only its own
        samples, and the frames past the chunk's are dropped), so that the layer sees one shape."""
        num_frames = self.num_frames(num_samples)
        statistics = None
        if self.normalises_per_clip:
            for chunk in self._raw_chunks(read, num_frames, chunk_frames):
                statistics = self.merge_statistics(statistics, self.frame_statistics(chunk))
        for chunk in self._raw_chunks(read, num_frames if keep_frames is None else keep_frames, chunk_frames):
            yield self.normalise_frames(chunk, statistics) if self.normalises_per_clip else chunk

    def _raw_chunks(self, read, num_frames, chunk_frames):
        start, stop = self.frame_span(0, chunk_frames)
        full_window = stop - start
        for first in range(0, num_frames, chunk_frames):
            count = min(chunk_frames, num_frames - first)
            window = read(*self.frame_span(first, count))
            yield self.window_frames(np.pad(window, (0, full_window - len(window))))[:count]

    def frame_centers(self, num_frames):
        """Seconds from the start of the clip to the centre of each frame."""
        return (np.arange(num_frames) * self.hop_length + self.first_frame_center) / self.sample_rate

    def patch_centers(self, num_patches, patch_size):
        """Seconds from the start of the clip to the centre of each time patch of
        `patch_size` frames (the mean of its frames' centres)."""
        return self.frame_centers(num_patches * patch_size).reshape(num_patches, patch_size).mean(axis=1)

    def compute_output_shape(self, input_shape):
        frames = self.time_frames
        if frames is None and input_shape[1] is not None:
            frames = self.num_frames(input_shape[1])
        return (input_shape[0], frames, self.num_mels)


@keras.saving.register_keras_serializable(package="keras_bat")
class LogMelSpectrogram(Frontend):
    """BAT's frontend: per-clip min-max normalised log-mel spectrogram.

    Power STFT (periodic Hann window, centred with reflect padding) -> HTK
    mel filter bank -> decibels clamped at each clip's own maximum minus
    `top_db` -> per-clip min-max scaling to [0, 1] -> optional zero-pad or crop
    of the time axis. An all-zero clip maps to all zeros.

    Args:
        sample_rate: int, sample rate of the input in Hz. Defaults to `16000`.
        n_fft: int, FFT and window length in samples. Defaults to `1024`.
        hop_length: int, hop between frames in samples. Defaults to `160`.
        num_mels: int, number of mel bands. Defaults to `128`.
        top_db: float, dynamic range kept below each clip's maximum, in dB.
            Defaults to `80.0`.
        time_frames: int or `None`, pad or crop the output to this many
            frames (after normalisation). Defaults to `None` (keep all).
        f_min: float, lowest mel band edge in Hz. Defaults to `0.0`.
        f_max: float or `None`, highest band edge. Defaults to Nyquist.
        use_kernels: `None` (auto), `True` or `False`: the fused Triton
            kernel after the STFT (torch backend, CUDA), see
            `keras_bat.ops.log_mel_from_stft`. Defaults to `None`.

    Call arguments:
        waveforms: float tensor `(batch, samples)`.

    Returns:
        float32 tensor `(batch, frames, num_mels)` with
        `frames = 1 + samples // hop_length` (or `time_frames`).
    """

    def __init__(self, sample_rate=16000, n_fft=1024, hop_length=160, num_mels=128,
                 top_db=80.0, time_frames=None, f_min=0.0, f_max=None, use_kernels=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        for name, value in (("sample_rate", sample_rate), ("n_fft", n_fft),
                            ("hop_length", hop_length), ("num_mels", num_mels)):
            if int(value) != value or value <= 0:
                raise UsageError(f"`{name}` must be a positive integer. Received: {value!r}")
        if time_frames is not None and (int(time_frames) != time_frames or time_frames <= 0):
            raise UsageError(f"`time_frames` must be None or a positive integer. Received: {time_frames!r}")
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.first_frame_center = 0  # samples: a centred STFT's frame t is centred at t * hop_length
        self.window_length = self.n_fft  # samples each frame reads (reflected at the clip's ends)
        self.num_mels = int(num_mels)
        self.top_db = None if top_db is None else float(top_db)
        self.time_frames = None if time_frames is None else int(time_frames)
        self.f_min = float(f_min)
        self.f_max = None if f_max is None else float(f_max)
        self.use_kernels = use_kernels
        self._window = hann_window(self.n_fft)
        self._filter_bank = htk_mel_filter_bank(
            self.n_fft // 2 + 1, self.num_mels, self.sample_rate, self.f_min, self.f_max)

    def call(self, waveforms):
        _check_waveforms(waveforms, self.n_fft // 2 + 1, self.__class__.__name__)
        waveforms = ops.cast(waveforms, "float32")
        spectrogram = log_mel_spectrogram(waveforms, self._window, self.hop_length, self._filter_bank, self.top_db,
                                          self.use_kernels)
        return fit_frames(spectrogram, self.time_frames)

    def num_frames(self, num_samples):
        """Frames produced for `num_samples` samples, before padding or cropping."""
        return 1 + num_samples // self.hop_length

    normalises_per_clip = True

    def window_frames(self, window):
        """dB frames `(frames, num_mels)` of a window `(samples,)` laid out by `frame_span`."""
        window = ops.cast(ops.convert_to_tensor(window)[None], "float32")
        if getattr(self, "_streamed_filter_bank", None) is None:  # on the device once, not once per window
            self._streamed_filter_bank = ops.convert_to_tensor(self._filter_bank)
        return power_to_db(stft_power(window, self._window, self.hop_length, center=False),
                           self._streamed_filter_bank)[0]

    def frame_statistics(self, frames):
        return float(ops.max(frames)), float(ops.min(frames))

    def merge_statistics(self, first, second):
        return second if first is None else (max(first[0], second[0]), min(first[1], second[1]))

    def normalise_frames(self, frames, statistics):
        return normalise_db(frames, self.top_db, *statistics)

    def get_config(self):
        config = super().get_config()
        config.update({
            "sample_rate": self.sample_rate, "n_fft": self.n_fft,
            "hop_length": self.hop_length, "num_mels": self.num_mels,
            "top_db": self.top_db, "time_frames": self.time_frames,
            "f_min": self.f_min, "f_max": self.f_max, "use_kernels": self.use_kernels,
        })
        return config


# EAT's AudioSet statistics: the defaults of KaldiFbank (the encoder families hold the others).
EAT_AUDIOSET_MEAN, EAT_AUDIOSET_STD = -4.59864076, 4.357353477
KALDI_WINDOWS = ("hanning", "povey")


@keras.saving.register_keras_serializable(package="keras_bat")
class KaldiFbank(Frontend):
    """Legacy frontend of EAT / SSLAM / BEATs checkpoints: Kaldi log-mel fbank.

    Matches Kaldi's `compute-fbank-feats` (as `torchaudio.compliance.kaldi
    .fbank` with no dither and no energy): the waveform is scaled (and its
    mean removed, EAT / SSLAM), then per frame the DC offset, a 0.97
    pre-emphasis, the window, a zero-padded power FFT, Kaldi's mel bank (20 Hz
    to Nyquist) and the natural log. The result is normalised as
    `(fbank - mean) / (2 * std)` with dataset statistics. The defaults are
    EAT's and SSLAM's frontend with AudioSet statistics;
    `KaldiFbank.for_encoder("beats", "esc50")` builds another official one.

    Args:
        sample_rate: int, sample rate in Hz. Defaults to `16000`.
        num_mels: int, number of mel bins. Defaults to `128`.
        frame_length_ms: float, window length in ms. Defaults to `25.0`.
        frame_shift_ms: float, hop in ms. Defaults to `10.0`.
        preemphasis: float, pre-emphasis coefficient. Defaults to `0.97`.
        low_freq: float, lowest mel edge in Hz. Defaults to `20.0`.
        mean: float or `None`, normalisation mean (EAT's AudioSet mean by
            default); `None` returns the raw log fbank.
        std: float, normalisation standard deviation (EAT's AudioSet one by default).
        time_frames: int or `None`, pad or crop the output to this many frames.
        window: str, `"hanning"` (symmetric Hann; EAT, SSLAM) or `"povey"`
            (Hann to the power 0.85, Kaldi's default; BEATs). Defaults to `"hanning"`.
        remove_mean: bool, subtract each waveform's mean first (EAT, SSLAM).
            Defaults to `True`.
        waveform_scale: float, multiply the waveform by this first (`2 ** 15`
            for BEATs, which reads 16-bit sample values). Defaults to `1.0`.

    Call arguments:
        waveforms: float tensor `(batch, samples)`.

    Returns:
        float32 tensor `(batch, frames, num_mels)`.
    """

    def __init__(self, sample_rate=16000, num_mels=128, frame_length_ms=25.0,
                 frame_shift_ms=10.0, preemphasis=0.97, low_freq=20.0,
                 mean=EAT_AUDIOSET_MEAN, std=EAT_AUDIOSET_STD, time_frames=None, window="hanning",
                 remove_mean=True, waveform_scale=1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if std is not None and std <= 0:
            raise UsageError(f"`std` must be positive. Received: {std!r}")
        if window not in KALDI_WINDOWS:
            raise UsageError(f"`window` must be one of {KALDI_WINDOWS}. Received: {window!r}")
        self.sample_rate = int(sample_rate)
        self.num_mels = int(num_mels)
        self.frame_length_ms = float(frame_length_ms)
        self.frame_shift_ms = float(frame_shift_ms)
        self.preemphasis = float(preemphasis)
        self.low_freq = float(low_freq)
        self.mean = None if mean is None else float(mean)
        self.std = None if std is None else float(std)
        self.time_frames = None if time_frames is None else int(time_frames)
        self.window = window
        self.remove_mean = bool(remove_mean)
        self.waveform_scale = float(waveform_scale)
        self.window_length = int(self.sample_rate * self.frame_length_ms / 1000)
        self.hop_length = int(self.sample_rate * self.frame_shift_ms / 1000)
        self.fft_length = 1 << (self.window_length - 1).bit_length()  # next power of two
        self.first_frame_center = self.window_length / 2  # snip-edges frames start at the first sample
        self._window = hann_window(self.window_length, periodic=False)
        if window == "povey":
            self._window = self._window ** np.float32(0.85)
        self._filter_bank = kaldi_mel_filter_bank(
            self.num_mels, self.fft_length, self.sample_rate, self.low_freq)

    @classmethod
    def for_encoder(cls, encoder, dataset="audioset", time_frames=None, **kwargs):
        """The official frontend of a legacy encoder for a dataset.

        Args:
            encoder: str, a registered Kaldi-fbank frontend: `"eat"`, `"sslam"`
                or `"beats"`.
            dataset: str, whose statistics normalise the fbank: `"audioset"`,
                `"speech_commands"`, `"esc50"`, `"librispeech"`, `"birdset"`
                or `"dcase"`. Defaults to `"audioset"`.
            time_frames: int or `None`, pad or crop to this many frames.
            **kwargs: further `KaldiFbank` arguments.
        """
        legacy = {name: build for name, build in FRONTENDS.items() if isinstance(build, KaldiSettings)}
        settings = legacy.get(str(encoder).lower())
        if settings is None:
            raise UsageError(f"No legacy frontend for encoder {encoder!r}; expected one of {sorted(legacy)}.")
        return settings.frontend(dataset, time_frames, **kwargs)

    def num_frames(self, num_samples):
        """Frames produced for `num_samples` samples (Kaldi's snip-edges rule)."""
        return 1 + (num_samples - self.window_length) // self.hop_length

    # `window_frames`: the base's. Each frame removes its own mean, so the clip's mean, which
    # `remove_mean` takes, changes nothing.

    def call(self, waveforms):
        _check_waveforms(waveforms, self.window_length, self.__class__.__name__)
        if waveforms.shape[1] is None:
            raise UsageError("KaldiFbank frames a known number of samples; it cannot be traced for any length "
                             "(e.g. exported for serving). Cut clips to a fixed length first.")
        waveforms = ops.cast(waveforms, "float32")
        if self.waveform_scale != 1.0:
            waveforms = waveforms * self.waveform_scale
        if self.remove_mean:
            waveforms = waveforms - ops.mean(waveforms, axis=1, keepdims=True)
        num_frames = self.num_frames(waveforms.shape[1])
        starts = np.arange(num_frames)[:, None] * self.hop_length
        frame_index = starts + np.arange(self.window_length)[None, :]  # frames, window
        frames = ops.take(waveforms, frame_index, axis=1)  # B, frames, window
        frames = frames - ops.mean(frames, axis=-1, keepdims=True)
        previous = ops.concatenate([frames[..., :1], frames[..., :-1]], axis=-1)
        frames = (frames - self.preemphasis * previous) * self._window
        power = rfft_power(frames, self.fft_length)  # B, frames, fft_length // 2 + 1
        mel = filter_bank_product(power, self._filter_bank)
        fbank = ops.log(ops.maximum(mel, np.finfo("float32").eps))
        if self.mean is not None:
            fbank = (fbank - self.mean) / (2.0 * self.std)
        return fit_frames(fbank, self.time_frames)

    def get_config(self):
        config = super().get_config()
        config.update({
            "sample_rate": self.sample_rate, "num_mels": self.num_mels,
            "frame_length_ms": self.frame_length_ms, "frame_shift_ms": self.frame_shift_ms,
            "preemphasis": self.preemphasis, "low_freq": self.low_freq,
            "mean": self.mean, "std": self.std, "time_frames": self.time_frames,
            "window": self.window, "remove_mean": self.remove_mean, "waveform_scale": self.waveform_scale,
        })
        return config


# Registry ---------------------------------------------------------------------------
# name -> build(num_mels, time_frames, dataset, use_kernels) -> Frontend. Encoders name their
# frontend (`BATBackbone(frontend=...)`); the encoder families register theirs.
FRONTENDS = Registry("frontend")


def register_frontend(name, build):
    """Registers the frontend `name`: `build(num_mels, time_frames, dataset, use_kernels)`
    returns the layer (`dataset` names the statistics a frontend normalises with, where it
    has any)."""
    FRONTENDS.register(name, build)


def build_frontend(name, time_frames=None, dataset="audioset", num_mels=128, use_kernels=None):
    """The registered frontend `name`, padding or cropping to `time_frames` (`None`: all frames)."""
    return FRONTENDS[name](num_mels=num_mels, time_frames=time_frames, dataset=dataset, use_kernels=use_kernels)


def _log_mel(num_mels, time_frames, dataset, use_kernels):
    return LogMelSpectrogram(num_mels=num_mels, time_frames=time_frames, use_kernels=use_kernels)


register_frontend("log_mel", _log_mel)


class KaldiSettings:
    """A legacy Kaldi-fbank frontend of an encoder family (`register_frontend`'s `build`):
    its `KaldiFbank` options and `dataset -> (mean, std)` statistics."""

    def __init__(self, statistics, window="hanning", remove_mean=True, waveform_scale=1.0):
        self.statistics = dict(statistics)
        self.options = {"window": window, "remove_mean": remove_mean, "waveform_scale": waveform_scale}

    def frontend(self, dataset="audioset", time_frames=None, **kwargs):
        """The `KaldiFbank` normalised with `dataset`'s statistics."""
        statistics = self.statistics.get(str(dataset).lower())
        if statistics is None:
            raise UsageError(f"No statistics for dataset {dataset!r}; expected one of {sorted(self.statistics)}.")
        mean, std = statistics
        return KaldiFbank(mean=mean, std=std, time_frames=time_frames, **{**self.options, **kwargs})

    def __call__(self, num_mels, time_frames, dataset, use_kernels):
        return self.frontend(dataset, time_frames, num_mels=num_mels)
