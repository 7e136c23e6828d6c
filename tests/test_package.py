import importlib
from pathlib import Path

import keras_bat


def test_public_names():
    assert keras_bat.BATBackbone is keras_bat.models.BATBackbone
    assert keras_bat.LogMelSpectrogram is keras_bat.layers.LogMelSpectrogram
    assert callable(keras_bat.convert.load_official_weights)


def test_kernels_folder_installs_under_its_import_name():
    """`keras_bat_kernels` is the project's `kernels/` folder: the same modules, the same code."""
    kernels = importlib.import_module("keras_bat_kernels")
    installed = Path(kernels.__file__).parent
    source = Path(__file__).resolve().parents[1] / "kernels"
    modules = sorted(p.name for p in source.glob("*.py"))
    assert "gated_attention.py" in modules and sorted(p.name for p in installed.glob("*.py")) == modules
    for name in modules:
        assert (installed / name).read_bytes() == (source / name).read_bytes(), name


def test_every_package_folder_is_installed():
    """pyproject.toml lists the packages explicitly: a new folder (an encoder family) must be on the list."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(path.parent.relative_to(root).parts) for path in (root / "keras_bat").rglob("__init__.py")}
    assert folders <= listed, f"packages missing from pyproject.toml: {sorted(folders - listed)}"
