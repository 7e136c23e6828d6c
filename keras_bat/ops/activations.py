"""Activations whose backend forms differ where it matters."""

import math

import keras
from keras import ops


def gelu(x):
    """Exact GELU, `x * Phi(x)`. Under TensorFlow written with `erf`:
    TensorFlow's own form uses `erfc`, which tf2onnx cannot convert to ONNX."""
    if keras.backend.backend() == "tensorflow":
        return 0.5 * x * (1.0 + ops.erf(x * math.sqrt(0.5)))
    return ops.gelu(x, approximate=False)
