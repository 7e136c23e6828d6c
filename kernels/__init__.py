"""Triton kernels of keras-bat, installed as `keras_bat_kernels`.

- `gated_attention`: fused gated masked attention (forward and backward).
- `log_mel`: fused log-mel spectrogram, the DFT as matrix products or after an STFT.

Each module holds the Triton kernels, a host launcher and a plain-PyTorch
reference; no Keras import. `keras_bat.ops` decides when to call them.
"""
