"""`keras-bat info`: versions of keras-bat, Keras, the backends, Triton and CUDA, read from package
metadata (nothing is imported)."""

import importlib.metadata
import json
import os
from pathlib import Path


def add_parser(commands):
    commands.add_parser("info", help="versions of keras-bat, Keras, the backends, Triton and CUDA",
                        description="Prints versions and the Keras backend, without importing them.")


def backend_in_use(args):
    return args.backend or os.environ.get("KERAS_BACKEND") or _keras_config_backend() or "tensorflow"


def _keras_config_backend():
    path = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "keras.json"
    try:
        return json.loads(path.read_text()).get("backend")
    except (OSError, ValueError):
        return None


def version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def run(args):
    lines = [f"keras-bat {version('keras-bat')}", f"Keras {version('keras')}, backend {backend_in_use(args)}"]
    for name in ("tensorflow", "jax", "jaxlib", "torch", "triton", "numpy"):
        lines.append(f"{name:<11}{version(name) or 'not installed'}")
    cuda = [f"{name} {version(name)}" for name in ("nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime-cu13",
                                                   "nvidia-cuda-runtime", "nvidia-cudnn-cu12") if version(name)]
    lines.append(f"{'CUDA':<11}{', '.join(cuda) if cuda else 'no CUDA runtime package'}")
    print("\n".join(lines))
    return 0
