"""Affine projections: one fused call where the backend has one."""

import keras
from keras import ops


def linear(inputs, kernel, bias=None):
    """`inputs @ kernel + bias` over the last axis of `inputs`.

    Under the torch backend this is one `torch.addmm` (the bias added inside
    the matrix product, as `torch.nn.Linear` does) instead of a product and a
    separate pass over its output; XLA (TensorFlow, JAX) fuses the two itself.
    """
    if keras.backend.backend() != "torch" or bias is None:
        out = ops.matmul(inputs, kernel)
        return out if bias is None else out + bias
    import torch

    inputs = ops.convert_to_tensor(inputs)
    kernel, bias = ops.cast(kernel, inputs.dtype), ops.cast(bias, inputs.dtype)
    out = torch.addmm(bias, inputs.reshape(-1, inputs.shape[-1]), kernel)
    return out.view(*inputs.shape[:-1], kernel.shape[-1])
