"""Loss and gradients of a closure with respect to Keras variables, on any backend."""

import keras


def value_and_gradients(loss_fn, variables):
    """Evaluates `loss_fn()` and its gradients with respect to `variables`.

    Args:
        loss_fn: a function of no arguments returning a scalar tensor; it
            reads the variables through Keras layers.
        variables: list of Keras variables.

    Returns:
        `(loss, [gradient per variable])`; a variable the loss does not
        depend on gets `None` (TensorFlow, torch) or zeros (JAX).
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn()
        return loss, tape.gradient(loss, [v.value for v in variables])
    if backend == "torch":
        import torch

        loss = loss_fn()
        return loss, torch.autograd.grad(loss, [v.value for v in variables], allow_unused=True)
    if backend == "jax":
        import jax

        def pure(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return loss_fn()

        return jax.jit(jax.value_and_grad(pure))([v.value for v in variables])
    raise NotImplementedError(f"No gradient helper for the {backend} backend.")
