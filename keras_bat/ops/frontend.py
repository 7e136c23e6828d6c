"""The frontends' spectra and the log-mel steps after the STFT: fused Triton
kernel or keras.ops."""

import contextlib
import contextvars

import keras
import numpy as np
from keras import ops

from keras_bat.ops.dispatch import use_kernel

_DEVICE_COPIES = {}  # (id, device) -> (array, tensor): each filter bank or window is copied to a device once


def log_mel_spectrogram(waveforms, window, hop_length, filter_bank, top_db=80.0, use_kernels=None):
    """Centred STFT (`len(window)` points, reflect padding) -> power -> mel ->
    dB -> per-example top-dB clamp -> per-example min-max. With the kernels:
    the whole pipeline fused, the DFT as matrix products (see
    `keras_bat_kernels.log_mel.log_mel_spectrogram`).

    Args:
        waveforms: float32 tensor `(batch, samples)`.
        window: float32 array, the analysis window; its length is the FFT size.
        hop_length: int, hop between frames in samples.
        filter_bank, top_db, use_kernels: as in `log_mel_from_stft`.

    Returns:
        float32 tensor `(batch, 1 + samples // hop_length, num_mels)` in [0, 1].
    """
    if use_kernel(waveforms, use_kernels, "log-mel"):
        from keras_bat_kernels.log_mel import log_mel_spectrogram as fused

        return fused(waveforms, _on_device(filter_bank, waveforms.device), len(window), hop_length, top_db,
                     window=_on_device(window, waveforms.device))
    return _log_mel_from_power(stft_power(waveforms, window, hop_length), filter_bank, top_db)


def stft_power(waveforms, window, hop_length, center=True):
    """`|STFT|^2` `(batch, frames, len(window) // 2 + 1)`, centred (reflect
    padding) or not (`real^2 + imag^2` of `ops.stft`; inside
    `portable_spectra()` under TensorFlow, see there)."""
    n_fft = len(window)
    if not _PORTABLE.get() or keras.backend.backend() != "tensorflow":
        real, imag = ops.stft(waveforms, n_fft, hop_length, n_fft, window=window, center=center)
        return real * real + imag * imag
    import tensorflow as tf

    if center:
        waveforms = tf.pad(waveforms, [[0, 0], [n_fft // 2, n_fft // 2]], mode="reflect")
    return _dft_power(tf.signal.frame(waveforms, n_fft, hop_length) * window, n_fft)


def rfft_power(frames, fft_length):
    """`|rfft(frames)|^2` over the last axis, zero-padded to `fft_length`
    (inside `portable_spectra()` under TensorFlow, see there)."""
    if not _PORTABLE.get() or keras.backend.backend() != "tensorflow":
        real, imag = ops.rfft(frames, fft_length=fft_length)
        return real * real + imag * imag
    return _dft_power(frames, fft_length)


_PORTABLE = contextvars.ContextVar("portable_spectra", default=False)


@contextlib.contextmanager
def portable_spectra():
    """Inside, spectra traced under TensorFlow are products with a DFT matrix
    instead of an FFT: tf2onnx converts TensorFlow's FFT with a dynamic
    number of frames to an invalid ONNX graph, matrix products it converts
    as they are. Slower than the FFT; `keras_bat.export` uses it for ONNX."""
    token = _PORTABLE.set(True)
    try:
        yield
    finally:
        _PORTABLE.reset(token)


_FLOAT_FILTER_BANKS = contextvars.ContextVar("float_filter_banks", default=False)

# TensorFlow Lite's dynamic-range quantization leaves constant weights of fewer elements in float.
UNQUANTIZED_WEIGHT_ELEMENTS = 1023


@contextlib.contextmanager
def float_filter_banks():
    """Inside, a filter bank traced into a graph is applied in blocks of frequency bins
    small enough that TensorFlow Lite's int8 (dynamic-range) quantization keeps them in
    float, and with them the power spectrum they read: it spans 100 dB and more, and
    int8 inputs (a scale per frame) would round the high bands to zero. The blocks' sum
    is the whole product. `keras_bat.export` uses it for quantized LiteRT files."""
    token = _FLOAT_FILTER_BANKS.set(True)
    try:
        yield
    finally:
        _FLOAT_FILTER_BANKS.reset(token)


def filter_bank_product(power, filter_bank):
    """`power (..., bins) @ filter_bank (bins, bands)`, in blocks inside `float_filter_banks()`."""
    if not _FLOAT_FILTER_BANKS.get():
        return ops.matmul(power, ops.convert_to_tensor(filter_bank))
    filter_bank = np.asarray(filter_bank)
    rows = max(1, UNQUANTIZED_WEIGHT_ELEMENTS // filter_bank.shape[1])
    blocks = [ops.matmul(power[..., start:start + rows], ops.convert_to_tensor(filter_bank[start:start + rows]))
              for start in range(0, filter_bank.shape[0], rows)]
    return sum(blocks[1:], blocks[0])


def _dft_power(frames, fft_length):
    """`|rfft|^2` of `(..., length)` frames as two matrix products (length <= fft_length)."""
    length = frames.shape[-1]
    angles = 2.0 * np.pi * np.outer(np.arange(length), np.arange(fft_length // 2 + 1)) / fft_length
    real = ops.matmul(frames, ops.convert_to_tensor(np.cos(angles).astype("float32")))
    imag = ops.matmul(frames, ops.convert_to_tensor(np.sin(angles).astype("float32")))
    return real * real + imag * imag


def log_mel_from_stft(real, imag, filter_bank, top_db=80.0, use_kernels=None):
    """Power -> mel -> dB -> per-example top-dB clamp -> per-example min-max.

    Args:
        real, imag: float32 tensors `(batch, frames, bins)`, the STFT.
        filter_bank: float32 array `(bins, num_mels)`.
        top_db: float or `None`.
        use_kernels: `None` (auto: the Triton kernel for CUDA tensors under
            the torch backend), `True` (required) or `False`.

    Returns:
        float32 tensor `(batch, frames, num_mels)` in [0, 1].
    """
    if use_kernel(real, use_kernels, "log-mel"):
        from keras_bat_kernels.log_mel import log_mel_from_stft as fused

        return fused(real, imag, _on_device(filter_bank, real.device), top_db)
    return _log_mel_from_power(real * real + imag * imag, filter_bank, top_db)


def _log_mel_from_power(power, filter_bank, top_db):
    db = power_to_db(power, filter_bank)
    return normalise_db(db, top_db, ops.max(db, axis=(1, 2), keepdims=True), ops.min(db, axis=(1, 2), keepdims=True))


def power_to_db(power, filter_bank):
    """Mel power in dB (floored at -100 dB) of a power spectrum `(..., bins)`."""
    mel = filter_bank_product(power, filter_bank)  # ..., mels
    return 10.0 * ops.log10(ops.maximum(mel, 1e-10))


def normalise_db(db, top_db, clip_max, clip_min):
    """A clip's dB clamped at its maximum - `top_db`, then min-max scaled to
    [0, 1]; `clip_max` / `clip_min` are the clip's own extremes before the
    clamp (broadcastable to `db`), so that a long clip can be normalised a
    window at a time."""
    high, low = clip_max, clip_min
    if top_db is not None:
        db = ops.maximum(db, high - top_db)
        low = ops.maximum(low, high - top_db)
    value_range = high - low
    # A constant clip (silence) has range 0 and maps to zeros. The explicit
    # guard keeps graph optimisers, which may reorder `high - low + 1e-8`
    # into `(high + 1e-8) - low == 0`, from turning silence into 0 / 0.
    return (db - low) / ops.where(value_range > 0, value_range + 1e-8, 1.0)


def _on_device(array, device):
    """`array` (a filter bank or window) as a float32 torch tensor on `device`, copied there once."""
    import torch

    if isinstance(array, torch.Tensor):
        return array.to(device=device, dtype=torch.float32)
    key = (id(array), str(device))
    if key not in _DEVICE_COPIES:  # the array is kept with its copy, so its id stays its own
        _DEVICE_COPIES[key] = (array, torch.as_tensor(array, dtype=torch.float32, device=device))
    return _DEVICE_COPIES[key][1]
