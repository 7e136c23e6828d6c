"""The keras-bat command: --backend through the installed console script, and one-line user errors."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from keras_bat import BATBackbone
from keras_bat.data import write_synthetic_dataset
from keras_bat_cli import run


def console_script():
    script = shutil.which("keras-bat", path=str(Path(sys.executable).parent)) or shutil.which("keras-bat")
    if script is None:
        pytest.fail("the keras-bat console script is not installed (pip install -e .)")
    return script


def test_backend_flag_of_the_console_script_wins_over_the_environment():
    backend = keras.backend.backend()
    other = "jax" if backend != "jax" else "torch"
    environment = {**os.environ, "KERAS_BACKEND": other}
    result = subprocess.run([console_script(), "--backend", backend, "info"], env=environment,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"backend {backend}" in result.stdout


@pytest.fixture
def presets(tmp_path):
    BATBackbone(dim=32, depth=1, num_heads=2).save_to_preset(tmp_path / "small")
    BATBackbone(dim=64, depth=1, num_heads=2).save_to_preset(tmp_path / "wide")
    (tmp_path / "empty").mkdir()
    write_synthetic_dataset(tmp_path / "audio", splits={"clips": 1}, clip_seconds=1.28)
    return tmp_path


@pytest.mark.parametrize("arguments, message", [
    (["probe", "esc50", "--variant", "cgp", "--set", "data.root={tmp}/missing"], "File not found: .*missing"),
    (["probe", "--set", "train.no_such_key=1"], "Unknown config key 'train.no_such_key'"),
    (["embed", "{tmp}/empty", "--backbone", "{tmp}/small"], "no audio files"),
    (["embed", "{tmp}/missing", "--backbone", "{tmp}/small"], "Folder not found"),
    (["embed", "{tmp}/audio", "--backbone", "{tmp}/small", "--weights", "{tmp}/wide/model.safetensors"],
     "does not fit this BATBackbone: shape mismatch"),
])
def test_user_mistakes_end_in_one_line_and_status_2(arguments, message, presets, capfd):
    arguments = [argument.format(tmp=presets) for argument in arguments]
    assert run(arguments) == 2
    error = capfd.readouterr().err
    lines = [line for line in error.splitlines() if line.startswith("keras-bat: error:")]
    assert len(lines) == 1 and "Traceback" not in error
    assert re.search(message, lines[0]), lines[0]
    with pytest.raises((ValueError, FileNotFoundError), match=message.split(":")[0]):
        run(arguments + ["--debug"])  # --debug: the error itself, with its traceback
