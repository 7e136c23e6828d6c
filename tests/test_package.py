import importlib
from pathlib import Path

import pytest
from helpers import in_one_backend_pass

import keras_bat


def test_public_names():
    assert keras_bat.BATBackbone is keras_bat.models.BATBackbone
    assert keras_bat.LogMelSpectrogram is keras_bat.layers.LogMelSpectrogram
    assert callable(keras_bat.models.bat.load_official_weights)
    # A converter that moved into its family's folder says where it went.
    with pytest.raises(AttributeError, match="from keras_bat.models.bat import load_official_weights"):
        keras_bat.convert.load_official_weights


def test_kernels_folder_installs_under_its_import_name():
    """`keras_bat_kernels` is the project's `kernels/` folder: the same modules, the same code."""
    kernels = importlib.import_module("keras_bat_kernels")
    installed = Path(kernels.__file__).parent
    source = Path(__file__).resolve().parents[1] / "kernels"
    modules = sorted(p.name for p in source.glob("*.py"))
    assert "gated_attention.py" in modules and sorted(p.name for p in installed.glob("*.py")) == modules
    for name in modules:
        assert (installed / name).read_bytes() == (source / name).read_bytes(), name


@in_one_backend_pass("torch", "building the packages")
def test_every_package_folder_is_installed(tmp_path):
    """setup.py finds the packages: a new folder (an encoder family) is built into the wheel unlisted."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)], cwd=root,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    folders = {path.parent.relative_to(root) for path in (root / "keras_bat").rglob("__init__.py")}
    built = {path.parent.relative_to(tmp_path) for path in tmp_path.rglob("__init__.py")}
    assert folders | {Path("keras_bat_kernels")} <= built, f"not built: {sorted(folders - built)}"
    assert (tmp_path / "keras_bat" / "workflows" / "configs" / "esc50.yaml").is_file()


def test_importing_the_package_imports_no_framework():
    """`import keras_bat` is light (the command line reads --backend after it); names load on first use."""
    import subprocess
    import sys

    code = ("import sys, keras_bat\n"
            "frameworks = {'keras', 'tensorflow', 'jax', 'torch', 'numpy'}\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & frameworks)\n"
            "assert not heavy, heavy\n"
            "assert keras_bat.AudioClassifier.__name__ == 'AudioClassifier' and 'keras' in sys.modules\n"
            "assert 'AudioTagger' in dir(keras_bat) and issubclass(keras_bat.UsageError, ValueError)\n"
            "try:\n    keras_bat.NoSuchName\nexcept AttributeError as error:\n    print(error)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "has no attribute 'NoSuchName'" in result.stdout
