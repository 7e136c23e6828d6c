"""Shared pytest fixtures."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("KERAS_BACKEND") == "torch":
    import torch

    if not torch.cuda.is_available():
        # Without a GPU the Triton kernels run in Triton's CPU interpreter; the
        # variable must be set before the kernels are imported.
        os.environ.setdefault("TRITON_INTERPRET", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Every random draw of the tests comes from this seed (or from a fixed one in the test itself):
# a failure names it, and setting it reruns the same draws, or other ones.
TEST_SEED = int(os.environ.get("KERAS_BAT_TEST_SEED", "0"))


def pytest_report_header(config):
    return f"keras-bat test seed: {TEST_SEED} (KERAS_BAT_TEST_SEED)"


def pytest_collection_modifyitems(items):
    # Tests marked `long` first: pytest-xdist gives each worker a contiguous share of the list and
    # balances by taking tests from the end of a queue, so a long test left near the end keeps one
    # worker busy after the others are done.
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        report.sections.append(("random seed", f"KERAS_BAT_TEST_SEED={TEST_SEED} repeats this test's random draws"))
    return report


@pytest.fixture(autouse=True)
def _seed_and_reset_policy():
    keras.utils.set_random_seed(TEST_SEED)  # Keras', NumPy's and Python's global generators
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def rng():
    """A NumPy generator seeded with the test seed, for draws a test explores (kill points, ...)."""
    return np.random.default_rng(TEST_SEED)


@pytest.fixture
def tiny_config():
    """The architecture of the parity fixtures (dim 64, depth 3, 4 heads)."""
    return {"dim": 64, "depth": 3, "num_heads": 4}
