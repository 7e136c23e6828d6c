"""The private Keras API keras-bat relies on (keras_bat/ops/keras_internals.py) is still there."""

import keras

from keras_bat.ops.keras_internals import CHECKED_KERAS_VERSIONS, check_internals


def test_the_private_keras_api_keras_bat_uses_is_there():
    problems = check_internals()
    assert not problems, (
        f"Keras {keras.__version__} changed private API that keras-bat relies on (checked with Keras "
        f"{', '.join(CHECKED_KERAS_VERSIONS)}); update keras_bat/ops/keras_internals.py:\n  " + "\n  ".join(problems))
