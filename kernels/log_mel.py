"""Fused log-mel spectrogram (Triton), in two launches:

1. per tile of frames, everything up to dB: either framing + window + real DFT
   as matrix products with a precomputed basis (tensor cores; `log_mel_spectrogram`)
   or the framework's STFT read back (`log_mel_from_stft`); then power, mel
   projection and dB, with each tile's max and min. Neither the frames nor the
   spectrum is written to memory on the first route, the power spectrum on neither.
2. per-example top-dB clamp and min-max to [0, 1] (they need each example's
   max and min over the whole plane), zero-padding or cropping in time.
"""

import math
import os

import torch
import triton
import triton.language as tl

from .gated_attention import check_block

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
    _store_db_tile(acc, DB, TILE_MAX, TILE_MIN, b, tile, rows, mels, row_ok, mel_ok, num_frames, num_mels, num_tiles,
                   db_per_log)


@triton.jit
def _store_db_tile(mel, DB, TILE_MAX, TILE_MIN, b, tile, rows, mels, row_ok, mel_ok, num_frames, num_mels,
                   num_tiles, db_per_log):
    """Writes a tile of mel power in dB (floored at -100 dB) and its max and min."""
    db = db_per_log * tl.log(tl.maximum(mel, 1e-10))
    ok = row_ok[:, None] & mel_ok[None, :]
    tl.store(DB + b * num_frames * num_mels + rows[:, None].to(tl.int64) * num_mels + mels[None, :], db, mask=ok)
    tl.store(TILE_MAX + b * num_tiles + tile, tl.max(tl.where(ok, db, float("-inf"))))
    tl.store(TILE_MIN + b * num_tiles + tile, tl.min(tl.where(ok, db, float("inf"))))


@triton.jit
def _bf16_parts(x, UPCAST: tl.constexpr):
    """`x` as hi + lo, two bfloat16 values (16 of float32's 24 significand bits)."""
    hi = x.to(tl.bfloat16)
    lo = (x - hi.to(tl.float32)).to(tl.bfloat16)
    if UPCAST:  # Triton's CPU interpreter multiplies bfloat16 tiles wrongly; their float32 values are exact
        return hi.to(tl.float32), lo.to(tl.float32)
    return hi, lo


@triton.jit
def _dft_dot(frames, BASIS, part, k_offsets, acc, N_FFT: tl.constexpr, BF16X3: tl.constexpr, UPCAST: tl.constexpr):
    """acc + frames @ basis part `part` (cosines 0, sines 1) at `k_offsets`.

    tf32x3 (Triton's three TF32 products) keeps float32's accuracy; bf16x3
    (the frames split in the kernel, the basis on the host) trades some of it
    for bfloat16 tensor cores."""
    plane: tl.constexpr = N_FFT * (N_FFT // 2)
    if BF16X3:
        high, low = _bf16_parts(frames, UPCAST)
        basis_high = tl.load(BASIS + (2 * part) * plane + k_offsets)
        basis_low = tl.load(BASIS + (2 * part + 1) * plane + k_offsets)
        acc = tl.dot(high, basis_high, acc, input_precision="ieee")
        acc = tl.dot(high, basis_low, acc, input_precision="ieee")
        return tl.dot(low, basis_high, acc, input_precision="ieee")
    return tl.dot(frames, tl.load(BASIS + part * plane + k_offsets), acc, input_precision="tf32x3")


@triton.jit
def _dft_mel_db(WAVE, BASIS, BANK, DB, TILE_MAX, TILE_MIN, s_wave, hop, num_frames, num_mels, num_tiles,
                db_per_log, N_FFT: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_F: tl.constexpr,
                BLOCK_K: tl.constexpr, BLOCK_MEL: tl.constexpr, BF16X3: tl.constexpr, UPCAST: tl.constexpr):
    """dB mel tile of one example straight from its (reflect-padded) waveform.

    Frame t of the tile is WAVE[t * hop : t * hop + N_FFT], read in place (no
    framed copy). Its real DFT is N_FFT real numbers: the cosine products of
    bins 0 .. N_FFT/2 - 1 and the sine products of the same bins, where bin
    0's sine (always zero) is replaced by bin N_FFT/2's cosine (the Nyquist
    bin, whose sine is zero too), so the basis is two (N_FFT, N_FFT/2) planes,
    the window folded in. Per block of bins: two matrix products over the
    frame's samples, power, and the block's mel contribution."""
    b = tl.program_id(0).to(tl.int64)
    tile = tl.program_id(1)
    rows = tile * BLOCK_T + tl.arange(0, BLOCK_T)
    row_ok = rows < num_frames
    bins = tl.arange(0, BLOCK_F)
    samples = tl.arange(0, BLOCK_K)
    mels = tl.arange(0, BLOCK_MEL)
    mel_ok = mels < num_mels
    frame_starts = b * s_wave + rows.to(tl.int64) * hop
    mel = tl.zeros([BLOCK_T, BLOCK_MEL], tl.float32)
    nyquist_power = tl.zeros([BLOCK_T], tl.float32)
    for first_bin in range(0, N_FFT // 2, BLOCK_F):
        real = tl.zeros([BLOCK_T, BLOCK_F], tl.float32)
        imag = tl.zeros([BLOCK_T, BLOCK_F], tl.float32)
        for first_sample in range(0, N_FFT, BLOCK_K):
            frames = tl.load(WAVE + frame_starts[:, None] + (first_sample + samples)[None, :], mask=row_ok[:, None],
                             other=0.0)
            k_offsets = (first_sample + samples)[:, None] * (N_FFT // 2) + (first_bin + bins)[None, :]
            real = _dft_dot(frames, BASIS, 0, k_offsets, real, N_FFT, BF16X3, UPCAST)
            imag = _dft_dot(frames, BASIS, 1, k_offsets, imag, N_FFT, BF16X3, UPCAST)
        is_nyquist = (first_bin + bins)[None, :] == 0  # the column that holds the Nyquist bin's cosine
        nyquist_power += tl.sum(tl.where(is_nyquist, imag * imag, 0.0), axis=1)
        power = real * real + tl.where(is_nyquist, 0.0, imag * imag)
        bank = tl.load(BANK + (first_bin + bins)[:, None] * num_mels + mels[None, :], mask=mel_ok[None, :], other=0.0)
        mel = tl.dot(power, bank, mel, input_precision="tf32x3")
    nyquist_bank = tl.load(BANK + (N_FFT // 2) * num_mels + mels, mask=mel_ok, other=0.0)
    mel += nyquist_power[:, None] * nyquist_bank[None, :]
    _store_db_tile(mel, DB, TILE_MAX, TILE_MIN, b, tile, rows, mels, row_ok, mel_ok, num_frames, num_mels, num_tiles,
                   db_per_log)


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


def _check_filter_bank(filter_bank, num_bins, device):
    if filter_bank.dim() != 2 or filter_bank.shape[0] != num_bins or filter_bank.shape[1] > 256:
        raise ValueError(f"filter_bank must be ({num_bins}, mels <= 256); received {tuple(filter_bank.shape)}.")
    return filter_bank.to(device=device, dtype=torch.float32).contiguous()


def _normalized(db, tile_max, tile_min, top_db, time_frames, block_t):
    """Pass 2: the dB plane clamped, min-max scaled and padded or cropped."""
    batch, num_frames, num_mels = db.shape
    out_frames = num_frames if time_frames is None else int(time_frames)
    out = torch.empty((batch, out_frames, num_mels), device=db.device, dtype=torch.float32)
    _normalize[(batch, triton.cdiv(out_frames, block_t))](
        db, out, tile_max.amax(dim=1), tile_min.amin(dim=1), num_frames, num_mels, out_frames,
        float(top_db) if top_db is not None else 0.0, HAS_TOP_DB=top_db is not None, BLOCK_T=block_t,
        BLOCK_MEL=_block_mel(num_mels))
    return out


def _block_mel(num_mels):
    return max(16, triton.next_power_of_2(num_mels))


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
    filter_bank = _check_filter_bank(filter_bank, real.shape[2], real.device)
    check_block("block_t", block_t)
    spectrum = interleaved(real, imag)
    batch, num_frames, num_bins = real.shape
    num_mels = filter_bank.shape[1]
    block_t = block_t or (16 if real.device.type == "cpu" else 32)
    num_tiles = triton.cdiv(num_frames, block_t)
    db = torch.empty((batch, num_frames, num_mels), device=real.device, dtype=torch.float32)
    tile_max = torch.empty((batch, num_tiles), device=real.device, dtype=torch.float32)
    tile_min = torch.empty_like(tile_max)
    # batch on grid axis 0 (2**31 - 1 programs), frame tiles on axis 1 (65535 x block_t frames)
    _mel_db[(batch, num_tiles)](spectrum, filter_bank, db, tile_max, tile_min, *spectrum.stride()[:3],
                                num_frames, num_bins, num_mels, num_tiles, _DB_PER_LOG,
                                BLOCK_T=block_t, BLOCK_F=16, BLOCK_MEL=_block_mel(num_mels))
    return _normalized(db, tile_max, tile_min, top_db, time_frames, block_t)


PRECISIONS = ("tf32x3", "bf16x3")
_BASES = {}  # (window id, precision, device) -> (window, version, basis); the window kept so its id stays its own


def dft_basis(window, precision="tf32x3"):
    """The windowed real-DFT basis of `_dft_mel_db`: planes (cos, sin), each
    `(n_fft, n_fft // 2)`, bin 0's sine column holding the Nyquist cosine;
    for bf16x3 each plane as two bfloat16 parts (high, low), kept as their
    float32 values in Triton's CPU interpreter (see `_bf16_parts`)."""
    n_fft = window.shape[0]
    samples = torch.arange(n_fft, dtype=torch.float64, device=window.device)[:, None]
    bins = torch.arange(n_fft // 2, dtype=torch.float64, device=window.device)[None, :]
    angles = 2.0 * math.pi * ((samples * bins) % n_fft) / n_fft  # reduced first: exact angles for every product
    sines = torch.sin(angles)
    sines[:, 0] = torch.cos(math.pi * samples[:, 0])  # the Nyquist bin's cosine, (-1)**k
    planes = (window.double()[None, :, None] * torch.stack((torch.cos(angles), sines))).float()  # power: signs cancel
    if precision == "tf32x3":
        return planes.contiguous()
    high = planes.to(torch.bfloat16)
    low = (planes - high.float()).to(torch.bfloat16)
    parts = torch.stack((high, low), dim=1).flatten(0, 1)  # cos high, cos low, sin high, sin low
    return (parts.float() if _interpreted() else parts).contiguous()


def _interpreted():
    return os.environ.get("TRITON_INTERPRET") == "1"


def _cached_basis(window, precision):
    key = (id(window), precision, str(window.device))
    cached = _BASES.get(key)
    if cached is None or cached[1] != window._version:  # new, or changed in place
        if len(_BASES) >= 16:
            _BASES.pop(next(iter(_BASES)))
        cached = _BASES[key] = (window, window._version, dft_basis(window, precision))
    return cached[2]


_HANN = {}  # (n_fft, device) -> periodic Hann window


def _dft_configs():
    tiles = [(64, 64, 32, 4, 3), (64, 64, 64, 4, 3), (128, 64, 32, 8, 3), (128, 64, 64, 8, 2), (64, 128, 32, 8, 3),
             (128, 128, 32, 8, 2)]
    return [triton.Config({"BLOCK_T": t, "BLOCK_F": f, "BLOCK_K": k}, num_warps=w, num_stages=stages)
            for t, f, k, w, stages in tiles]


def _keep_fitting_configs(configs, named_args, **kwargs):
    n_fft = kwargs.get("N_FFT", named_args.get("N_FFT"))
    return [c for c in configs if c.kwargs["BLOCK_F"] <= n_fft // 2 and c.kwargs["BLOCK_K"] <= n_fft] or configs


# Each trial starts from the neutral tile extremes (a trial's tiles of another size would stay behind).
_DFT_MEL_DB_TUNED = triton.autotune(configs=_dft_configs(), key=["N_FFT", "BF16X3"],
                                    prune_configs_by={"early_config_prune": _keep_fitting_configs},
                                    restore_value=["TILE_MAX", "TILE_MIN"])(_dft_mel_db)
MIN_DFT_BLOCK_T = 16


def log_mel_spectrogram(waveforms, filter_bank, n_fft=1024, hop_length=160, top_db=80.0, time_frames=None,
                        window=None, precision="tf32x3", block_t=None):
    """BAT's log-mel spectrogram of waveforms as one GEMM pipeline: centred
    frames (reflect padding), window and real DFT as matrix products with a
    precomputed basis on tensor cores, then power, mel projection and dB in the
    same kernel; clamp, min-max and padding in a second, light pass.

    Args:
        waveforms: float tensor `(batch, samples)`, samples > n_fft // 2.
        filter_bank: float32 tensor `(n_fft // 2 + 1, num_mels)`, num_mels <= 256.
        n_fft: the DFT size, a power of two from 64 to 4096. Defaults to 1024.
        hop_length: samples between frames. Defaults to 160.
        top_db, time_frames: as in `log_mel_from_stft`.
        window: float tensor `(n_fft,)` or `None` (periodic Hann). A given
            window's basis is built once and kept while the window is unchanged.
        precision: "tf32x3" (Triton's three TF32 products, float32's accuracy:
            within 1e-4 of the float32 STFT on the frontend fixture) or "bf16x3"
            (bfloat16 tensor cores, about 16 significand bits: within 1e-3).
        block_t: frames per tile (a power of two, 16 to 256); on a GPU the tiles
            are autotuned unless it is given or KERAS_BAT_AUTOTUNE=0.

    Returns:
        float32 tensor `(batch, time_frames or 1 + samples // hop_length, num_mels)` in [0, 1].
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; received {precision!r}.")
    if not (isinstance(n_fft, int) and 64 <= n_fft <= 4096 and n_fft & (n_fft - 1) == 0):
        raise ValueError(f"n_fft must be a power of two from 64 to 4096; received {n_fft!r}.")
    if waveforms.dim() != 2 or waveforms.shape[1] <= n_fft // 2:
        raise ValueError(f"waveforms must be (batch, samples) with more than n_fft // 2 = {n_fft // 2} samples "
                         f"(the centred frames are reflect-padded); received {tuple(waveforms.shape)}.")
    check_block("block_t", block_t)
    device = waveforms.device
    filter_bank = _check_filter_bank(filter_bank, n_fft // 2 + 1, device)
    if window is None:
        if (n_fft, str(device)) not in _HANN:
            _HANN[n_fft, str(device)] = torch.hann_window(n_fft, periodic=True, device=device)
        window = _HANN[n_fft, str(device)]
    if tuple(window.shape) != (n_fft,):
        raise ValueError(f"window must be ({n_fft},); received {tuple(window.shape)}.")
    basis = _cached_basis(window, precision)
    padded = torch.nn.functional.pad(waveforms.float()[:, None], (n_fft // 2, n_fft // 2), mode="reflect")[:, 0]
    batch, num_frames, num_mels = waveforms.shape[0], 1 + waveforms.shape[1] // hop_length, filter_bank.shape[1]
    db = torch.empty((batch, num_frames, num_mels), device=device, dtype=torch.float32)
    # One slot per MIN_DFT_BLOCK_T frames, whatever tile the autotuner picks; the unused stay neutral.
    tile_slots = triton.cdiv(num_frames, MIN_DFT_BLOCK_T)
    tile_max = torch.full((batch, tile_slots), float("-inf"), device=device)
    tile_min = torch.full((batch, tile_slots), float("inf"), device=device)
    arguments = (padded, basis, filter_bank, db, tile_max, tile_min, padded.stride(0), hop_length, num_frames,
                 num_mels, tile_slots, _DB_PER_LOG)
    constants = {"N_FFT": n_fft, "BLOCK_MEL": _block_mel(num_mels), "BF16X3": precision == "bf16x3",
                 "UPCAST": _interpreted() and precision == "bf16x3"}
    if device.type == "cuda" and block_t is None and os.environ.get("KERAS_BAT_AUTOTUNE", "1") != "0":
        _DFT_MEL_DB_TUNED[lambda meta: (batch, triton.cdiv(num_frames, meta["BLOCK_T"]))](*arguments, **constants)
    else:
        block_t = block_t or 64
        block_f, block_k = (256, 256) if device.type == "cpu" else (64, 32)  # the interpreter's cost is per operation
        blocks = {"BLOCK_T": block_t, "BLOCK_F": min(block_f, n_fft // 2), "BLOCK_K": min(block_k, n_fft)}
        _dft_mel_db[(batch, triton.cdiv(num_frames, block_t))](*arguments, **constants, **blocks)
    return _normalized(db, tile_max, tile_min, top_db, time_frames, block_t or 32)


def log_mel_spectrogram_via_stft(waveforms, filter_bank, n_fft=1024, hop_length=160, top_db=80.0, time_frames=None):
    """The same with torch.stft (periodic Hann window, centred, reflect
    padding) and `log_mel_from_stft` after it."""
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
