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
def _mel_db(REAL, IMAG, BANK, DB, TILE_MAX, TILE_MIN, s_b, s_t, s_f,
            num_frames, num_bins, num_mels, num_tiles, db_per_log,
            BLOCK_T: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_MEL: tl.constexpr):
    """dB mel tile of one example and its max and min."""
    tile = tl.program_id(0)
    b = tl.program_id(1)
    rows = tile * BLOCK_T + tl.arange(0, BLOCK_T)
    mels = tl.arange(0, BLOCK_MEL)
    row_ok = rows < num_frames
    mel_ok = mels < num_mels
    acc = tl.zeros([BLOCK_T, BLOCK_MEL], tl.float32)
    for start in range(0, num_bins, BLOCK_F):
        bins = start + tl.arange(0, BLOCK_F)
        bin_ok = bins < num_bins
        offsets = b * s_b + rows[:, None] * s_t + bins[None, :] * s_f
        mask = row_ok[:, None] & bin_ok[None, :]
        real = tl.load(REAL + offsets, mask=mask, other=0.0)
        imag = tl.load(IMAG + offsets, mask=mask, other=0.0)
        bank = tl.load(BANK + bins[:, None] * num_mels + mels[None, :], mask=bin_ok[:, None] & mel_ok[None, :],
                       other=0.0)
        acc += tl.dot(real * real + imag * imag, bank, input_precision="ieee")
    db = db_per_log * tl.log(tl.maximum(acc, 1e-10))
    ok = row_ok[:, None] & mel_ok[None, :]
    tl.store(DB + b * num_frames * num_mels + rows[:, None] * num_mels + mels[None, :], db, mask=ok)
    tl.store(TILE_MAX + b * num_tiles + tile, tl.max(tl.where(ok, db, float("-inf"))))
    tl.store(TILE_MIN + b * num_tiles + tile, tl.min(tl.where(ok, db, float("inf"))))


@triton.jit
def _normalize(DB, OUT, TILE_MAX, TILE_MIN, num_frames, num_mels, num_tiles, out_frames, top_db,
               HAS_TOP_DB: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_MEL: tl.constexpr,
               BLOCK_TILES: tl.constexpr):
    """Clamp at max - top_db, min-max to [0, 1], zero-pad to `out_frames`."""
    tile = tl.program_id(0)
    b = tl.program_id(1)
    tiles = tl.arange(0, BLOCK_TILES)
    high = tl.max(tl.load(TILE_MAX + b * num_tiles + tiles, mask=tiles < num_tiles, other=float("-inf")))
    low = tl.min(tl.load(TILE_MIN + b * num_tiles + tiles, mask=tiles < num_tiles, other=float("inf")))
    floor = high - top_db
    if HAS_TOP_DB:
        low = tl.maximum(low, floor)
    value_range = high - low
    denominator = tl.where(value_range > 0, value_range + 1e-8, 1.0)  # silence maps to zeros
    rows = tile * BLOCK_T + tl.arange(0, BLOCK_T)
    mels = tl.arange(0, BLOCK_MEL)
    mel_ok = mels < num_mels
    has_frame = rows < num_frames
    db = tl.load(DB + b * num_frames * num_mels + rows[:, None] * num_mels + mels[None, :],
                 mask=has_frame[:, None] & mel_ok[None, :], other=0.0)
    if HAS_TOP_DB:
        db = tl.maximum(db, floor)
    normalized = tl.where(has_frame[:, None], (db - low) / denominator, 0.0)
    tl.store(OUT + b * out_frames * num_mels + rows[:, None] * num_mels + mels[None, :], normalized,
             mask=(rows < out_frames)[:, None] & mel_ok[None, :])


def log_mel_from_stft(real, imag, filter_bank, top_db=80.0, time_frames=None, block_t=None):
    """BAT's log-mel spectrogram from an STFT.

    Args:
        real, imag: float32 tensors `(batch, frames, n_fft // 2 + 1)`, any strides.
        filter_bank: float32 tensor `(n_fft // 2 + 1, num_mels)`, num_mels <= 256.
        top_db: float or `None`: dB values below each example's max - top_db
            are raised to it. Defaults to 80.
        time_frames: int or `None`: zero-pad or crop the time axis to it.
        block_t: optional frames per tile (a power of two >= 16).

    Returns:
        float32 tensor `(batch, time_frames or frames, num_mels)` in [0, 1].
    """
    if real.shape != imag.shape or real.dim() != 3:
        raise ValueError(f"real and imag must both be (batch, frames, bins); received {tuple(real.shape)}, "
                         f"{tuple(imag.shape)}.")
    if filter_bank.dim() != 2 or filter_bank.shape[0] != real.shape[2] or filter_bank.shape[1] > 256:
        raise ValueError(f"filter_bank must be ({real.shape[2]}, mels <= 256); received {tuple(filter_bank.shape)}.")
    real, imag = real.float(), imag.float()
    if imag.stride() != real.stride():  # one set of strides serves both
        real, imag = real.contiguous(), imag.contiguous()
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
    _mel_db[(num_tiles, batch)](real, imag, filter_bank, db, tile_max, tile_min, *real.stride(),
                                num_frames, num_bins, num_mels, num_tiles, _DB_PER_LOG,
                                BLOCK_T=block_t, BLOCK_F=32, BLOCK_MEL=block_mel)
    out = torch.empty((batch, out_frames, num_mels), device=real.device, dtype=torch.float32)
    _normalize[(triton.cdiv(out_frames, block_t), batch)](
        db, out, tile_max, tile_min, num_frames, num_mels, num_tiles, out_frames,
        float(top_db) if top_db is not None else 0.0, HAS_TOP_DB=top_db is not None, BLOCK_T=block_t,
        BLOCK_MEL=block_mel, BLOCK_TILES=max(16, triton.next_power_of_2(num_tiles)))
    return out


def log_mel_spectrogram(waveforms, filter_bank, n_fft=1024, hop_length=160, top_db=80.0, time_frames=None):
    """Waveforms `(batch, samples)` -> BAT log-mel, with torch.stft (periodic
    Hann window, centred, reflect padding) and the fused kernel."""
    window = torch.hann_window(n_fft, periodic=True, device=waveforms.device)
    stft = torch.stft(waveforms.float(), n_fft, hop_length, window=window, center=True, pad_mode="reflect",
                      return_complex=True).transpose(1, 2)  # B, frames, bins
    parts = torch.view_as_real(stft)
    return log_mel_from_stft(parts[..., 0], parts[..., 1], filter_bank, top_db, time_frames)


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
