"""The kernels are PyTorch + Triton code: they are tested in the torch backend's run."""

import os

collect_ignore_glob = [] if os.environ.get("KERAS_BACKEND") == "torch" else ["test_*.py"]
