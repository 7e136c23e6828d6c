"""Fused log-mel: equal to the BAT frontend fixture and to the PyTorch reference."""

import numpy as np
import pytest
import torch

from helpers import load_parity
from keras_bat.layers.frontend import htk_mel_filter_bank
from keras_bat_kernels.log_mel import interleaved, log_mel_from_stft, log_mel_reference, log_mel_spectrogram

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _bank(num_mels=128, n_fft=1024):
    return torch.as_tensor(htk_mel_filter_bank(n_fft // 2 + 1, num_mels, 16000, 0.0, None), device=DEVICE)


@pytest.mark.parametrize("key,time_frames", [("spectrogram_unpadded", None), ("spectrogram", 256)])
def test_equals_the_frontend_fixture(key, time_frames):
    fixture = load_parity("frontend.safetensors")
    waveforms = torch.as_tensor(fixture["waveforms"], device=DEVICE)
    out = log_mel_spectrogram(waveforms, _bank(), time_frames=time_frames).cpu().numpy()
    expected = fixture[key][:, 0]
    assert out.shape == expected.shape
    assert np.max(np.abs(out - expected)) <= 1e-4
    assert np.all(out[2] == 0)  # the silent clip


def test_long_clip_cropped_equals_the_fixture():
    fixture = load_parity("frontend.safetensors")
    waveform = torch.as_tensor(fixture["waveform_long"], device=DEVICE)
    out = log_mel_spectrogram(waveform, _bank(), time_frames=256).cpu().numpy()
    assert np.max(np.abs(out - fixture["spectrogram_long_fixed"][:, 0])) <= 1e-4


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
