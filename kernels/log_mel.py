"""Fused log-mel spectrogram (Triton): STFT power -> mel projection -> dB ->
per-example top-dB clamp -> per-example min-max -> zero-pad or crop in time.

This is BAT's frontend after the STFT (which comes from the framework's FFT):
the power spectrum is never written to memory, and the dB plane is read back
once, in the second of two passes (the clamp and the min-max need each
example's maximum and minimum over the whole plane).
"""

import math

import torch
import triton
import triton.language as tl

_DB_PER_LOG = 10.0 / math.log(10.0)  # 10 * log10(x) = _DB_PER_LOG * ln(x)


@triton.jit
def _mel_db(SPEC, BANK, DB, TILE_MAX, TILE_MIN, s_b, s_t, s_f,
            num_frames, num_bins, num_mels, num_tiles, db_per_log,
            BLOCK_T: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_MEL: tl.constexpr):
    """dB mel tile of one example and its max and min.

    SPEC holds the STFT as interleaved (real, imag) pairs, each pair's two
    values adjacent: a tile row is read as 2 * BLOCK_F consecutive values
    (vector loads), squared, and multiplied with the filter bank's rows each
    taken twice, which adds real**2 + imag**2 inside the product."""
    b = tl.program_id(0).to(tl.int64)
    tile = tl.program_id(1)
    rows = tile * BLOCK_T + tl.arange(0, BLOCK_T)
    mels = tl.arange(0, BLOCK_MEL)
    parts = tl.arange(0, 2 * BLOCK_F)  # real, imag, real, imag, ...
    row_ok = rows < num_frames
    mel_ok = mels < num_mels
    acc = tl.zeros([BLOCK_T, BLOCK_MEL], tl.float32)
    for start in range(0, num_bins, BLOCK_F):
        bins = start + parts // 2
        bin_ok = bins < num_bins
        offsets = b * s_b + rows[:, None].to(tl.int64) * s_t + (bins * s_f + parts % 2)[None, :]
        values = tl.load(SPEC + offsets, mask=row_ok[:, None] & bin_ok[None, :], other=0.0)
        bank = tl.load(BANK + bins[:, None] * num_mels + mels[None, :], mask=bin_ok[:, None] & mel_ok[None, :],
                       other=0.0)
        acc += tl.dot(values * values, bank, input_precision="ieee")
    db = db_per_log * tl.log(tl.maximum(acc, 1e-10))
    ok = row_ok[:, None] & mel_ok[None, :]
    tl.store(DB + b * num_frames * num_mels + rows[:, None].to(tl.int64) * num_mels + mels[None, :], db, mask=ok)
    tl.store(TILE_MAX + b * num_tiles + tile, tl.max(tl.where(ok, db, float("-inf"))))
    tl.store(TILE_MIN + b * num_tiles + tile, tl.min(tl.where(ok, db, float("inf"))))


@triton.jit
def _normalize(DB, OUT, HIGH, LOW, num_frames, num_mels, out_frames, top_db,
               HAS_TOP_DB: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_MEL: tl.constexpr):
    """Clamp at max - top_db, min-max to [0, 1], zero-pad to `out_frames`."""
    b = tl.program_id(0).to(tl.int64)
    tile = tl.program_id(1)
    high = tl.load(HIGH + b)
    low = tl.load(LOW + b)
    floor = high - top_db
    if HAS_TOP_DB:
        low = tl.maximum(low, floor)
    value_range = high - low
    denominator = tl.where(value_range > 0, value_range + 1e-8, 1.0)  # silence maps to zeros
    rows = tile * BLOCK_T + tl.arange(0, BLOCK_T)
    mels = tl.arange(0, BLOCK_MEL)
    mel_ok = mels < num_mels
    has_frame = rows < num_frames
    db = tl.load(DB + b * num_frames * num_mels + rows[:, None].to(tl.int64) * num_mels + mels[None, :],
                 mask=has_frame[:, None] & mel_ok[None, :], other=0.0)
    if HAS_TOP_DB:
        db = tl.maximum(db, floor)
    normalized = tl.where(has_frame[:, None], (db - low) / denominator, 0.0)
    tl.store(OUT + b * out_frames * num_mels + rows[:, None].to(tl.int64) * num_mels + mels[None, :], normalized,
             mask=(rows < out_frames)[:, None] & mel_ok[None, :])


def interleaved(real, imag):
    """`(batch, frames, bins, 2)` float32 view holding (real, imag) pairs: the
    memory of `real` itself when the two are the halves of one complex tensor
    (`torch.view_as_real(x)[..., 0]` and `[..., 1]`, or `x.real` and
    `x.imag`), else a stacked copy."""
    real_part_of_pairs = (real.dtype == imag.dtype == torch.float32 and real.stride() == imag.stride()
                          and imag.data_ptr() == real.data_ptr() + real.element_size()
                          and real.stride(-1) >= 2)
    if real_part_of_pairs:
        return torch.as_strided(real, (*real.shape, 2), (*real.stride(), 1))
    return torch.stack((real.float(), imag.float()), dim=-1)


def log_mel_from_stft(real, imag, filter_bank, top_db=80.0, time_frames=None, block_t=None):
    """BAT's log-mel spectrogram from an STFT.

    Args:
        real, imag: float32 tensors `(batch, frames, n_fft // 2 + 1)`, any
            strides; read in place when they are the two halves of one complex
            tensor.
        filter_bank: float32 tensor `(n_fft // 2 + 1, num_mels)`, num_mels
            <= 256, best already on the STFT's device.
        top_db: float or `None`: dB values below each example's max - top_db
            are raised to it. Defaults to 80.
        time_frames: int or `None`: zero-pad or crop the time axis to it.
        block_t: optional frames per tile (a power of two, 16 to 256).

    Returns:
        float32 tensor `(batch, time_frames or frames, num_mels)` in [0, 1].
    """
    if real.shape != imag.shape or real.dim() != 3:
        raise ValueError(f"real and imag must both be (batch, frames, bins); received {tuple(real.shape)}, "
                         f"{tuple(imag.shape)}.")
    if filter_bank.dim() != 2 or filter_bank.shape[0] != real.shape[2] or filter_bank.shape[1] > 256:
        raise ValueError(f"filter_bank must be ({real.shape[2]}, mels <= 256); received {tuple(filter_bank.shape)}.")
    if block_t is not None and not (isinstance(block_t, int) and 16 <= block_t <= 256 and block_t & (block_t - 1) == 0):
        raise ValueError(f"block_t must be a power of two from 16 to 256; received {block_t!r}.")
    spectrum = interleaved(real, imag)
    filter_bank = filter_bank.to(device=real.device, dtype=torch.float32).contiguous()
    batch, num_frames, num_bins = real.shape
    num_mels = filter_bank.shape[1]
    out_frames = num_frames if time_frames is None else int(time_frames)
    block_t = block_t or (16 if real.device.type == "cpu" else 32)
    num_tiles = triton.cdiv(num_frames, block_t)
    block_mel = max(16, triton.next_power_of_2(num_mels))
    db = torch.empty((batch, num_frames, num_mels), device=real.device, dtype=torch.float32)
    tile_max = torch.empty((batch, num_tiles), device=real.device, dtype=torch.float32)
    tile_min = torch.empty_like(tile_max)
    # batch on grid axis 0 (2**31 - 1 programs), frame tiles on axis 1 (65535 x block_t frames)
    _mel_db[(batch, num_tiles)](spectrum, filter_bank, db, tile_max, tile_min, *spectrum.stride()[:3],
                                num_frames, num_bins, num_mels, num_tiles, _DB_PER_LOG,
                                BLOCK_T=block_t, BLOCK_F=16, BLOCK_MEL=block_mel)
    out = torch.empty((batch, out_frames, num_mels), device=real.device, dtype=torch.float32)
    _normalize[(batch, triton.cdiv(out_frames, block_t))](
        db, out, tile_max.amax(dim=1), tile_min.amin(dim=1), num_frames, num_mels, out_frames,
        float(top_db) if top_db is not None else 0.0, HAS_TOP_DB=top_db is not None, BLOCK_T=block_t,
        BLOCK_MEL=block_mel)
    return out


def log_mel_spectrogram(waveforms, filter_bank, n_fft=1024, hop_length=160, top_db=80.0, time_frames=None):
    """Waveforms `(batch, samples)` -> BAT log-mel, with torch.stft (periodic
    Hann window, centred, reflect padding) and the fused kernel."""
    window = torch.hann_window(n_fft, periodic=True, device=waveforms.device)
    stft = torch.stft(waveforms.float(), n_fft, hop_length, window=window, center=True, pad_mode="reflect",
                      return_complex=True).transpose(1, 2)  # B, frames, bins
    return log_mel_from_stft(stft.real, stft.imag, filter_bank, top_db, time_frames)


def log_mel_reference(real, imag, filter_bank, top_db=80.0, time_frames=None):
    """The same computation in plain PyTorch, for tests and benchmarks."""
    mel = (real.float() ** 2 + imag.float() ** 2) @ filter_bank.float()
    db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
    if top_db is not None:
        db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - top_db)
    low, high = db.amin(dim=(1, 2), keepdim=True), db.amax(dim=(1, 2), keepdim=True)
    value_range = high - low
    out = (db - low) / torch.where(value_range > 0, value_range + 1e-8, torch.ones_like(value_range))
    if time_frames is not None:
        out = out[:, :time_frames]
        out = torch.nn.functional.pad(out, (0, 0, 0, time_frames - out.shape[1]))
    return out
