"""Test helpers: parity fixtures of the official code and a generic layer check."""

import importlib
import os
import pathlib

import keras
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PARITY_DIR = pathlib.Path(os.environ.get("KERAS_BAT_PARITY_DIR", ROOT.parent / "shared" / "parity" / "tiny"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def in_one_backend_pass(backend, what):
    """Marks a test whose subject (`what`) is the same under every Keras backend: it runs in
    `backend`'s pass of tests/run_all_backends.sh only."""
    return pytest.mark.skipif(keras.backend.backend() != backend,
                              reason=f"{what} does not depend on the backend: tested in the {backend} pass")


def parity_path(name, fixture_set="tiny"):
    """Path of a parity fixture (`tiny/`, or the sibling sets `short/` and
    `peer/`); skips outside CI and fails in CI when it is absent."""
    return _required_file((PARITY_DIR if fixture_set == "tiny" else PARITY_DIR.parent / fixture_set) / name)


def shared_path(name):
    """Path of a ground-truth file beside the parity fixtures (e.g. `PAPER_SETTINGS.md`);
    skips outside CI and fails in CI when it is absent."""
    return _required_file(PARITY_DIR.parent.parent / name)


def _required_file(path):
    if not path.exists():
        message = (f"{path} not found (set KERAS_BAT_PARITY_DIR to the folder holding the official code's "
                   "outputs, beside the paper's settings)")
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def require_module(name):
    """Imports an optional module; skips outside CI and fails in CI when it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError:
        message = f"{name} is not installed"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def require_program(name):
    """The path of a program on PATH; skips outside CI and fails in CI when it is missing
    (.ci/run installs the programs the tests use)."""
    import shutil

    path = shutil.which(name)
    if path is None:
        message = f"the program {name} is not installed"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def load_parity(name, fixture_set="tiny"):
    from safetensors.numpy import load_file

    return load_file(str(parity_path(name, fixture_set)))


def weights_file_arrays(path):
    """`{path in the file: array}` of every weight in a Keras weights file (`.weights.h5`)."""
    import h5py

    arrays = {}
    with h5py.File(path, "r") as file:
        file.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if hasattr(item, "shape") else None)
    return arrays


def preset_weights(folder):
    """The weights of the encoder preset in `folder` (`model.weights.h5`), by their path in the file."""
    from keras_bat.convert.checkpoints import NATIVE_WEIGHTS_FILE

    return weights_file_arrays(pathlib.Path(folder) / NATIVE_WEIGHTS_FILE)


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x), dtype="float32")


def max_abs_error(actual, expected):
    actual, expected = to_numpy(actual), to_numpy(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != expected {expected.shape}"
    return float(np.max(np.abs(actual - expected)))


def run_layer_test(layer, inputs, tmp_path=None):
    """Checks a layer: config round trip, eager call, symbolic call and jit-compiled call.

    Returns the eager output as NumPy (a dict of arrays for dict outputs).
    """
    eager = keras.tree.map_structure(to_numpy, layer(inputs))
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()

    symbolic_inputs = keras.tree.map_structure(
        lambda x: keras.Input(shape=x.shape[1:], batch_size=x.shape[0], dtype=str(x.dtype)), inputs)
    symbolic = layer(symbolic_inputs)
    keras.tree.map_structure(
        lambda s, e: _assert_compatible_shape(s.shape, e.shape), symbolic, eager)
    assert_output_spec(layer, inputs, eager)
    assert_output_spec(layer, symbolic_inputs, eager)

    model = keras.Model(symbolic_inputs, symbolic)
    compiled = model.predict(inputs, batch_size=inputs.shape[0] if hasattr(inputs, "shape") else None,
                             verbose=0)
    keras.tree.map_structure(
        lambda c, e: np.testing.assert_allclose(c, e, atol=1e-4, rtol=1e-4), compiled, eager)
    return eager


def assert_output_spec(layer, inputs, eager):
    """`layer.compute_output_spec(inputs)` (concrete or symbolic inputs) describes the eager
    outputs `eager`: the same structure, compatible shapes, the same dtypes."""
    spec = layer.compute_output_spec(inputs)
    keras.tree.assert_same_structure(spec, eager)
    keras.tree.map_structure(lambda s, e: _assert_compatible_shape(s.shape, e.shape), spec, eager)
    keras.tree.map_structure(lambda s, e: np.testing.assert_equal(keras.backend.standardize_dtype(s.dtype),
                                                                  keras.backend.standardize_dtype(e.dtype)),
                             spec, eager)


def _assert_compatible_shape(symbolic_shape, shape):
    assert len(symbolic_shape) == len(shape), (symbolic_shape, shape)
    for s, n in zip(symbolic_shape, shape):
        assert s is None or s == n, (symbolic_shape, shape)
