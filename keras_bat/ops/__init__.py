"""Backend- and device-dependent implementations, chosen in one place."""

from keras_bat.ops.attention import gated_attention, resolve_use_kernels

__all__ = ["gated_attention", "resolve_use_kernels"]
