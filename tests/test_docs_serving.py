"""The serving example of docs/serving.md, run as written: export a probe, serve it without Keras."""

import re
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from keras_bat import AudioClassifier, BATBackbone, LogMelSpectrogram
from keras_bat.heads import CGP

PAGE = Path(__file__).resolve().parents[1] / "docs" / "serving.md"


def serving_blocks():
    text = PAGE.read_text()
    section = text.split("<!-- serving example")[1].split("<!-- end of serving example -->")[0]
    return re.findall(r"```(bash|python)\n(.*?)```", section, re.S)


def test_serving_example_runs(tmp_path):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("run in the TensorFlow pass (the export itself is tested on every backend in test_export.py)")
    AudioClassifier(BATBackbone(dim=32, depth=2, num_heads=4), CGP(3, 8),
                    frontend=LogMelSpectrogram(time_frames=128)).save_to_preset(tmp_path / "my_probe")
    blocks = serving_blocks()
    assert [language for language, _ in blocks] == ["bash", "python", "python", "python"]
    for language, code in blocks:
        if language == "bash":
            command = ["bash", "-euo", "pipefail", "-c", code]
        else:  # the serving process must not need Keras
            command = [sys.executable, "-c", 'import sys\nsys.modules["keras"] = None\n' + code
                       + '\nprint("shape", tuple(logits.shape) if "logits" in dir() else '
                         'tuple(next(iter(outputs.values())).shape))']
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        if language == "python":
            assert "shape (2, 3)" in result.stdout
