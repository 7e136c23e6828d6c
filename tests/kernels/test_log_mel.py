"""Fused log-mel, both routes (the DFT as matrix products from the waveform, and
after torch.stft): equal to the BAT frontend fixture and to the PyTorch reference."""

import numpy as np
import pytest
import torch

from helpers import load_parity
from keras_bat.layers.frontend import htk_mel_filter_bank
from keras_bat_kernels.log_mel import (dft_basis, interleaved, log_mel_from_stft, log_mel_reference,
                                      log_mel_spectrogram, log_mel_spectrogram_via_stft)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _bank(num_mels=128, n_fft=1024):
    return torch.as_tensor(htk_mel_filter_bank(n_fft // 2 + 1, num_mels, 16000, 0.0, None), device=DEVICE)


ROUTES = {"dft_tf32x3": log_mel_spectrogram,
          "dft_bf16x3": lambda *args, **kwargs: log_mel_spectrogram(*args, **kwargs, precision="bf16x3"),
          "after_stft": log_mel_spectrogram_via_stft}


@pytest.mark.parametrize("route,key,time_frames,tolerance", [
    ("dft_tf32x3", "spectrogram_unpadded", None, 1e-4), ("dft_tf32x3", "spectrogram", 256, 1e-4),
    ("dft_bf16x3", "spectrogram", 256, 2e-3), ("after_stft", "spectrogram_unpadded", None, 1e-4)])
def test_equals_the_frontend_fixture(route, key, time_frames, tolerance):
    fixture = load_parity("frontend.safetensors")
    waveforms = torch.as_tensor(fixture["waveforms"], device=DEVICE)
    out = ROUTES[route](waveforms, _bank(), time_frames=time_frames).cpu().numpy()
    expected = fixture[key][:, 0]
    assert out.shape == expected.shape
    assert np.max(np.abs(out - expected)) <= tolerance
    assert np.all(out[2] == 0)  # the silent clip


def test_long_clip_cropped_equals_the_fixture():
    fixture = load_parity("frontend.safetensors")
    waveform = torch.as_tensor(fixture["waveform_long"], device=DEVICE)
    out = log_mel_spectrogram(waveform, _bank(), time_frames=256).cpu().numpy()
    assert np.max(np.abs(out - fixture["spectrogram_long_fixed"][:, 0])) <= 1e-4


def test_other_sizes_and_windows_equal_torch_stft():
    """n_fft 256, hop 100, a Hamming window, against torch.stft and the reference;
    the window's basis is rebuilt when the window changes in place. The bank
    weights every bin (a mel bank gives the DC and Nyquist bins none)."""
    generator = torch.Generator().manual_seed(1)
    waveforms = (torch.randn(2, 3000, generator=generator) * torch.linspace(0.01, 1.0, 3000)).to(DEVICE)
    bank = torch.rand(129, 40, generator=generator).to(DEVICE)
    bank[[0, 128]] *= 1e3  # so that leaving out either bin shows
    window = torch.hamming_window(256, periodic=True, device=DEVICE)

    def expected():
        stft = torch.stft(waveforms, 256, 100, window=window, center=True, pad_mode="reflect",
                          return_complex=True).transpose(1, 2)
        return log_mel_reference(stft.real, stft.imag, bank)

    out = log_mel_spectrogram(waveforms, bank, n_fft=256, hop_length=100, window=window)
    assert out.shape == (2, 31, 40)
    assert (out - expected()).abs().max().item() <= 1e-4
    window.copy_(torch.hann_window(256, periodic=False, device=DEVICE))
    changed = log_mel_spectrogram(waveforms, bank, n_fft=256, hop_length=100, window=window)
    assert (changed - out).abs().max().item() > 1e-2
    assert (changed - expected()).abs().max().item() <= 1e-4


def test_the_bf16x3_basis_parts_add_up_to_the_float32_basis():
    window = torch.hann_window(64, periodic=True, device=DEVICE)
    exact = dft_basis(window, "tf32x3")
    assert exact.shape == (2, 64, 32)
    parts = dft_basis(window, "bf16x3").float()
    assert parts.shape == (4, 64, 32)
    assert torch.equal(parts[0::2], exact.to(torch.bfloat16).float())  # the high parts: bfloat16 values
    assert ((parts[0::2] + parts[1::2]) - exact).abs().max().item() <= 2.0 ** -16


@pytest.mark.parametrize("top_db,time_frames,num_mels", [(80.0, None, 128), (None, 40, 64), (20.0, 80, 100)])
def test_equals_the_reference_on_random_spectra(top_db, time_frames, num_mels):
    generator = torch.Generator().manual_seed(0)
    scale = 10.0 ** torch.randn(3, 57, 1, generator=generator)
    real = (torch.randn(3, 57, 513, generator=generator) * scale).to(DEVICE)
    imag = torch.randn(3, 57, 513, generator=generator).to(DEVICE)
    bank = _bank(num_mels)
    out = log_mel_from_stft(real, imag, bank, top_db, time_frames)
    expected = log_mel_reference(real, imag, bank, top_db, time_frames)
    assert out.shape == expected.shape
    assert (out - expected).abs().max().item() <= 1e-5


def test_halves_of_one_complex_tensor_are_read_in_place():
    stft = torch.randn(2, 30, 513, dtype=torch.complex64, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    spectrum = interleaved(stft.real, stft.imag)
    assert spectrum.data_ptr() == torch.view_as_real(stft).data_ptr()  # no copy
    separate = interleaved(stft.real.contiguous(), stft.imag.contiguous())
    assert torch.equal(spectrum, separate)
    out = log_mel_from_stft(stft.real, stft.imag, _bank())
    expected = log_mel_reference(stft.real, stft.imag, _bank())
    assert (out - expected).abs().max().item() <= 1e-5


def test_invalid_inputs_are_named():
    real = torch.zeros(1, 4, 513, device=DEVICE)
    with pytest.raises(ValueError, match="filter_bank must be"):
        log_mel_from_stft(real, real, torch.zeros(512, 128, device=DEVICE))
    with pytest.raises(ValueError, match="real and imag"):
        log_mel_from_stft(real, real[0], _bank())
    with pytest.raises(ValueError, match="block_t must be a power of two"):
        log_mel_from_stft(real, real, _bank(), block_t=8)
    waveforms = torch.zeros(1, 2000, device=DEVICE)
    with pytest.raises(ValueError, match="precision must be one of"):
        log_mel_spectrogram(waveforms, _bank(), precision="fp8")
    with pytest.raises(ValueError, match="n_fft must be a power of two"):
        log_mel_spectrogram(waveforms, _bank(), n_fft=1000)
    with pytest.raises(ValueError, match="more than n_fft // 2 = 512 samples"):
        log_mel_spectrogram(waveforms[:, :512], _bank())
    with pytest.raises(ValueError, match="window must be"):
        log_mel_spectrogram(waveforms, _bank(), window=torch.ones(512, device=DEVICE))
    with pytest.raises(ValueError, match="filter_bank must be"):
        log_mel_spectrogram(waveforms, _bank(n_fft=512))
