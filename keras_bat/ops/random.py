"""Random draws per example that do not depend on how a batch is split over devices."""

import keras


def draw_rows(draw, rows):
    """`draw(rows)`: random values for the `rows` examples of a batch (a tensor, or a structure
    of tensors, examples first), equal to those one device gives each example.

    Under a tf.distribute strategy every replica holds a part of the global batch and runs the
    step from the same random state, so each would draw the same values for its part; here each
    draws the whole global batch's values and keeps its own rows. Elsewhere (one device, or
    keras.distribution on JAX, whose arrays are the global batch) it is `draw(rows)`.
    """
    replica = _tf_replica_context()
    if replica is None or replica.num_replicas_in_sync == 1:
        return draw(rows)
    first = replica.replica_id_in_sync_group * rows
    every = draw(rows * replica.num_replicas_in_sync)
    return keras.tree.map_structure(lambda values: values[first:first + rows], every)


def _tf_replica_context():
    # A backend branch: only tf.distribute splits a batch into per-replica parts.
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    return tf.distribute.get_replica_context()  # None in the cross-replica context
