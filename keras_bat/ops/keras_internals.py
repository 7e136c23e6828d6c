"""Every use of Keras' private API in keras-bat, in one place.

Keras offers no public way to do these. Each was checked with the Keras versions in
`CHECKED_KERAS_VERSIONS`; `check_internals()` (run by tests/test_ops_keras_internals.py)
names the installed Keras version and what changed when an upgrade breaks one.
"""

import keras

CHECKED_KERAS_VERSIONS = ("3.15",)

# Private methods keras-bat overrides: (class, method, the backend that calls it or None for all, why).
OVERRIDDEN_HOOKS = (
    (keras.optimizers.Optimizer, "_apply_weight_decay", None,
     "ScaledAdamW decays each variable with its own layer-wise learning rate"),
    (keras.Model, "_default_save_signature", "tensorflow",
     "encoders leave the SavedModel signature to the exporting model, whose frontend fixes the frames"),
)


def step_counter(optimizer):
    """The variable that counts the optimizer's steps. `optimizer.iterations` is that variable
    only without gradient accumulation; with it, a tensor: the counter // accumulation steps."""
    return optimizer._iterations


def variable_index(optimizer, variable):
    """The index under which the optimizer keeps `variable`'s slot variables."""
    return optimizer._get_variable_index(variable)


def adam_moments(optimizer, variable):
    """Adam's first and second moment variables of `variable`."""
    index = variable_index(optimizer, variable)
    return optimizer._momentums[index], optimizer._velocities[index]


def uses_weight_decay(optimizer, variable):
    """Whether the optimizer decays `variable` (after `exclude_from_weight_decay`)."""
    return optimizer._use_weight_decay(variable)


def own_variables(layer):
    """The variables a layer or model created itself, in the order `save_own_variables` stores them."""
    return layer._trainable_variables + layer._non_trainable_variables


def save_weights_skipping(model, path, skipped):
    """Writes `model`'s weights to the `.weights.h5` file `path`, without those of the layers in
    `skipped` (a task preset's head and frontend, its backbone stored apart), as keras-hub does."""
    from keras.src.saving import saving_lib

    saving_lib.save_weights_only(model, path, objects_to_skip=list(skipped))


def load_weights_skipping(model, path, skipped):
    """Reads what `save_weights_skipping` wrote into `model` (built), skipping the same layers."""
    from keras.src.saving import saving_lib

    saving_lib.load_weights_only(model, path, objects_to_skip=list(skipped))


def check_internals():
    """What of the private API above the installed Keras lacks, as a list of messages
    (empty when all is there)."""
    problems = [f"{cls.__name__}.{name} (overridden: {why}) is gone"
                for cls, name, backend, why in OVERRIDDEN_HOOKS
                if backend in (None, keras.backend.backend()) and not hasattr(cls, name)]
    variable = keras.Variable([[1.0, 2.0]], name="kernel")
    optimizer = keras.optimizers.AdamW()
    optimizer.build([variable])
    try:
        counter = step_counter(optimizer)
        assert counter is optimizer.iterations and any(v is counter for v in optimizer.variables)
        assert variable_index(optimizer, variable) == 0
        assert [tuple(m.shape) for m in adam_moments(optimizer, variable)] == [(1, 2), (1, 2)]
        assert uses_weight_decay(optimizer, variable) is True
    except (AttributeError, AssertionError, TypeError, IndexError) as error:
        problems.append(f"the optimizer's slot variables are no longer found so ({type(error).__name__}: {error})")
    layer = keras.layers.Dense(3)
    layer.build((None, 2))
    try:
        assert [v.name for v in own_variables(layer)] == ["kernel", "bias"]
    except (AttributeError, AssertionError, TypeError) as error:
        problems.append(f"a layer's own variables are no longer found so ({type(error).__name__}: {error})")
    try:
        assert float(scale_loss_for_replicas(keras.ops.convert_to_tensor(2.0))) == 2.0  # one replica
    except (ImportError, AssertionError, TypeError) as error:
        problems.append(f"Keras' loss scaling for tf.distribute replicas is gone ({type(error).__name__}: {error})")
    problems += _check_weights_skipping()
    return problems


def _check_weights_skipping():
    import os
    import tempfile

    import numpy as np

    def model():
        inputs = keras.Input((2,))
        first, second = keras.layers.Dense(2), keras.layers.Dense(1)
        return keras.Model(inputs, second(first(inputs))), first, second

    saved, first, second = model()
    loaded, other_first, other_second = model()
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "task.weights.h5")
            save_weights_skipping(saved, path, [first])
            load_weights_skipping(loaded, path, [other_first])
        assert np.array_equal(keras.ops.convert_to_numpy(other_second.kernel),
                              keras.ops.convert_to_numpy(second.kernel))
        assert not np.array_equal(keras.ops.convert_to_numpy(other_first.kernel),
                                  keras.ops.convert_to_numpy(first.kernel))
    except (AttributeError, AssertionError, TypeError, ImportError) as error:
        return [f"weights are no longer saved without chosen layers so ({type(error).__name__}: {error})"]
    return []


def scale_loss_for_replicas(loss):
    """`loss` divided by the replicas of a tf.distribute strategy (whose gradients are summed over
    replicas), as Keras scales the losses it computes itself; unchanged elsewhere."""
    from keras.src.losses.loss import scale_loss_for_distribution

    return scale_loss_for_distribution(loss)
