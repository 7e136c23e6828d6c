"""The README's "Your own recordings" commands, run as written: a folder of labelled recordings
probed on an encoder given by Hub URI (the Hub is a stand-in on 127.0.0.1 serving a small BAT
under the official release's name, laid out as the release is), a task preset written with the
class names, and new recordings tagged with it."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from audio_files import write
from helpers import in_one_backend_pass, require_module
from hub_server import HubServer, official_file

from keras_bat.models import BATBackbone

README = Path(__file__).resolve().parents[1] / "README.md"
RELEASE = "lrauch/BAT-vit-b16-pretrainedAS2M"
CLASSES = {"chirp": 1200.0, "drone": 220.0, "whistle": 3000.0}  # a steady tone each, at its own pitch


def readme_blocks():
    text = README.read_text()
    section = text.split("<!-- own recordings example -->")[1].split("<!-- end of own recordings example -->")[0]
    return re.findall(r"```(bash|python)\n(.*?)```", section, re.S)


def sound(frequency, seconds, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    tone = 0.4 * np.sin(2 * np.pi * frequency * (1 + 0.02 * rng.normal()) * t)
    return (tone + 0.02 * rng.normal(size=t.size)).astype("float32")


# Presets load under every backend (test_models_audio_classifier.py); the tagging itself runs on every
# backend (test_workflows_tag.py).
@pytest.mark.long
@in_one_backend_pass("torch", "the README's own-recordings commands")
def test_readme_own_recordings_commands_run_as_written(tmp_path):
    require_module("huggingface_hub")
    blocks = readme_blocks()
    assert [language for language, _ in blocks] == ["bash", "python"]
    for name, frequency in CLASSES.items():
        for i in range(8):
            folder = tmp_path / "my_sounds" / name
            folder.mkdir(parents=True, exist_ok=True)
            write(folder / f"{name}_{i}.wav", sound(frequency, 1.5 + 0.25 * i, seed=i))
    new = {"street.wav": "drone", "garden.flac": "chirp", "kettle.ogg": "whistle"}
    (tmp_path / "new_recordings").mkdir()
    for i, (file_name, label) in enumerate(new.items()):
        write(tmp_path / "new_recordings" / file_name, sound(CLASSES[label], 3.0, seed=10 + i))
    keras.utils.set_random_seed(0)
    # A small BAT (2 blocks of width 128, 16 time patches per chunk) as the official release is
    # laid out: its parameter names under the wrapper's prefix, a transformers config.json.
    release = {"model.safetensors": official_file(BATBackbone(dim=128, depth=2, num_heads=2, chunk_time_patches=16)),
               "config.json": json.dumps({"architectures": ["BATModel"], "model_type": "bat"}).encode()}
    with HubServer({RELEASE: release}) as hub:
        environment = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "hf_cache"),
                       "HF_HUB_OFFLINE": "0", "KERAS_BACKEND": keras.backend.backend()}
        bin_folder = Path(sys.executable).parent
        environment["PATH"] = f"{bin_folder}{os.pathsep}{environment['PATH']}"  # this environment's keras-bat
        for language, code in blocks:
            command = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
            result = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True)
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
            if language == "python":
                printed = result.stdout
    assert any(path.startswith(f"/{RELEASE}/resolve/") and path.endswith("/model.safetensors")
               for path in hub.requests)

    run = tmp_path / "runs" / "my_sounds"
    results = json.loads((run / "results.json").read_text())
    assert results["eval_clips"] == 6 and results["train_clips"] == 18  # a fifth of each class held out
    task = json.loads((run / "preset" / "task.json").read_text())
    assert task["config"]["label_names"] == sorted(CLASSES)
    with open(tmp_path / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    top = {Path(row["path"]).name: row["label"] for row in rows if row["kind"] == "clip" and row["rank"] == "1"}
    assert top == new, results["metrics"]
    assert sum(row["kind"] == "clip" for row in rows) == 9  # --top-k 3 of 3 files
    assert "'label': 'drone'" in printed.split("'labels': [")[1].split("}")[0]
