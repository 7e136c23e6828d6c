"""Forward passes that keep no record for gradients."""

import contextlib

import keras


def no_gradients():
    """A context in which eager calls record nothing for gradients: `torch.no_grad()`
    under the torch backend (whose eager calls on trainable weights otherwise keep
    every activation for a backward pass); TensorFlow and JAX record gradients only
    inside a tape or a transform, so there it does nothing."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()
