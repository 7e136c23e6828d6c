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
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_reset_policy():
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def tiny_config():
    """The architecture of the parity fixtures (dim 64, depth 3, 4 heads)."""
    return {"dim": 64, "depth": 3, "num_heads": 4}
