"""In-place optimizer updates on the torch backend, whose steps run eagerly: a few passes
over each variable instead of a new tensor per operation."""

import keras


def updates_in_place():
    """Whether optimizer steps update variables in place here (the torch backend)."""
    return keras.backend.backend() == "torch"


def adam_update_in_place(variable, gradient, first_moment, second_moment, alpha, beta_1, beta_2, epsilon):
    """Keras' Adam step, the same formulas, as in-place torch operations:
    `variable -= alpha * m / (sqrt(v) + epsilon)` after the moments are updated."""
    import torch

    m, v = first_moment.value, second_moment.value
    with torch.no_grad():
        m.lerp_(gradient, 1 - beta_1)  # m + (g - m) (1 - beta_1)
        v.mul_(beta_2).addcmul_(gradient, gradient, value=1 - beta_2)  # v + (g**2 - v) (1 - beta_2)
        update = v.sqrt().add_(epsilon)  # the one temporary
        torch.div(m, update, out=update)
        variable.value.sub_(update.mul_(alpha))


def scale_in_place(variable, factor):
    """`variable *= factor` in one pass."""
    import torch

    with torch.no_grad():
        variable.value.mul_(factor)
