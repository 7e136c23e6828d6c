"""Backend- and device-dependent implementations, chosen in one place."""

from keras_bat.ops.activations import gelu
from keras_bat.ops.attention import gated_attention
from keras_bat.ops.dispatch import kernel_unavailable_reason, resolve_use_kernels
from keras_bat.ops.frontend import log_mel_from_stft, log_mel_spectrogram, portable_spectra, rfft_power
from keras_bat.ops.inference import no_gradients
from keras_bat.ops.linear import linear

__all__ = [
    "gated_attention", "gelu", "kernel_unavailable_reason", "linear", "log_mel_from_stft",
    "log_mel_spectrogram", "no_gradients", "portable_spectra", "resolve_use_kernels", "rfft_power",
]
