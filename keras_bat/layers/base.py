"""The base of keras-bat's layers: `keras.layers.Layer`, whose output specs also describe concrete inputs."""

import keras


def symbolic(inputs):
    """`inputs` (possibly nested) with every tensor or array replaced by a `keras.KerasTensor`
    of its shape and dtype; other values (None, numbers, strings) are kept."""
    def describe(x):
        if isinstance(x, keras.KerasTensor) or not (hasattr(x, "shape") and hasattr(x, "dtype")):
            return x
        return keras.KerasTensor(tuple(x.shape), dtype=keras.backend.standardize_dtype(x.dtype))
    return keras.tree.map_structure(describe, inputs)


class Layer(keras.layers.Layer):
    """A `keras.layers.Layer` whose `compute_output_spec` takes arrays and tensors as well as
    `keras.KerasTensor`s (Keras reads shapes of symbolic inputs alone: a NumPy batch would
    reach `compute_output_shape` as `None`)."""

    def compute_output_spec(self, *args, **kwargs):
        return super().compute_output_spec(*symbolic(args), **symbolic(kwargs))
