"""The log-mel frontend after the STFT: fused Triton kernel or keras.ops."""

from keras import ops

from keras_bat.ops.dispatch import use_kernel

_FILTER_BANKS = {}  # (id, device) -> (array, tensor): each bank is copied to a device once


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

        return fused(real, imag, _filter_bank_on(filter_bank, real.device), top_db)
    power = real * real + imag * imag  # B, frames, bins
    mel = ops.matmul(power, ops.convert_to_tensor(filter_bank))  # B, frames, mels
    db = 10.0 * ops.log10(ops.maximum(mel, 1e-10))
    if top_db is not None:
        floor = ops.max(db, axis=(1, 2), keepdims=True) - top_db
        db = ops.maximum(db, floor)
    low = ops.min(db, axis=(1, 2), keepdims=True)
    high = ops.max(db, axis=(1, 2), keepdims=True)
    value_range = high - low
    # A constant clip (silence) has range 0 and maps to zeros. The explicit
    # guard keeps graph optimisers, which may reorder `high - low + 1e-8`
    # into `(high + 1e-8) - low == 0`, from turning silence into 0 / 0.
    return (db - low) / ops.where(value_range > 0, value_range + 1e-8, 1.0)


def _filter_bank_on(filter_bank, device):
    """`filter_bank` as a float32 torch tensor on `device`, copied there once."""
    import torch

    if isinstance(filter_bank, torch.Tensor):
        return filter_bank.to(device=device, dtype=torch.float32)
    key = (id(filter_bank), str(device))
    if key not in _FILTER_BANKS:  # the array is kept with its copy, so its id stays its own
        _FILTER_BANKS[key] = (filter_bank, torch.as_tensor(filter_bank, dtype=torch.float32, device=device))
    return _FILTER_BANKS[key][1]
