"""The keras-bat command: --backend through the installed console script, and one-line user errors."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import pytest
from helpers import in_one_backend_pass

from keras_bat import BATBackbone
from keras_bat.data import write_synthetic_dataset
from keras_bat.cli import parse as parse_arguments
from keras_bat.cli import run


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
    BATBackbone(dim=64, depth=1, num_heads=2).export_official(tmp_path / "wide.safetensors")
    (tmp_path / "empty").mkdir()
    write_synthetic_dataset(tmp_path / "audio", splits={"clips": 1}, clip_seconds=1.28)
    return tmp_path


# Mistakes found before any model is built: (command line, what the one line must say).
MISTAKES_BEFORE_ANY_MODEL = [
    (["probe", "--set", "train.steps=abc"], r"Setting train.steps='abc': expected a whole number > 0"),
    (["probe", "--set", "train.batch_size=-4"], r"Setting train.batch_size=-4: expected a whole number > 0"),
    (["pretrain", "--set", "data.clip_seconds=[1,2]"], r"Setting data.clip_seconds=\[1, 2\]: expected a number > 0"),
    (["probe", "--set", "train.lr=fast"], r"Setting train.lr='fast': expected a number > 0"),
    (["probe", "--set", "head.dropout=1.5"], r"Setting head.dropout=1.5: expected a number from 0 to 1"),
    (["probe", "--set", "evaluate.median_filter=4"], r"Setting evaluate.median_filter=4: expected an odd number"),
    (["probe", "--set", "train.feature_cache=maybe"], r"expected one of auto, on, off"),
    (["demo", "--set", "model.dtype=fp8"], r"Setting model.dtype='fp8': expected one of float32"),
    (["probe", "--set", "head.type=nope"], r"Unknown head type 'nope'"),
    (["probe", "--set", "train.no_such_key=1"], r"Unknown config key 'train.no_such_key'"),
    (["probe", "--set", "steps=5"], r"Unknown config key 'steps'"),
    (["probe", "esc50", "--variant", "nope"], r"Unknown variant 'nope' in esc50"),
    (["probe", "no_such_recipe"], r"No recipe file 'no_such_recipe'"),
    (["probe", "--set", "data.root={tmp}/missing"], r"data.root=.*missing.*no such file or folder"),
    (["finetune", "--set", "model.weights={tmp}/missing.pt"], r"model.weights=.*missing.pt.*no such checkpoint"),
    (["probe", "--output-dir", "{tmp}/notes.txt"], r"output folder .*notes.txt is a file, not a folder"),
    (["demo", "--output-dir", "{tmp}/notes.txt/run"], r"output folder .*cannot be made: .*notes.txt is a file"),
    (["probe", "esc50", "--set", "train.steps"], r"--set takes KEY=VALUE settings; 'train.steps' is not one"),
    (["embed", "{tmp}/audio", "--batch-size", "0"], r"argument --batch-size: expected a number > 0"),
    (["embed", "{tmp}/audio", "--clip-seconds", "-1"], r"argument --clip-seconds: expected a number > 0"),
    (["embed", "{tmp}/empty", "--backbone", "{tmp}/small"], r"no audio files"),
    (["embed", "{tmp}/missing", "--backbone", "{tmp}/small"], r"Folder not found"),
    (["embed", "{tmp}/audio", "--weights", "{tmp}/missing.pt"], r"--weights .*missing.pt: no such checkpoint"),
    (["embed", "{tmp}/audio", "--output", "{tmp}/notes.txt"], r"output folder .*notes.txt is a file"),
    (["embed", "{tmp}/audio", "--output", "{tmp}/other_files"], r"already holds files .*no keras-bat run"),
    (["embed", "{tmp}/audio", "--resume", "--overwrite"], r"not allowed with argument"),
    (["export", "{tmp}/small", "{tmp}/notes.txt/model.onnx", "--format", "onnx"], r"notes.txt is a file"),
    (["export", "{tmp}/small", "{tmp}/model", "--time-frames", "0"], r"argument --time-frames: expected"),
    (["frobnicate"], r"invalid choice: 'frobnicate'"),
]


@pytest.fixture
def mistakes_folder(presets):
    (presets / "notes.txt").write_text("not a folder")
    (presets / "other_files").mkdir()
    (presets / "other_files" / "thesis.tex").write_text("x")
    return presets


@pytest.mark.parametrize("arguments, message", MISTAKES_BEFORE_ANY_MODEL, ids=lambda x: " ".join(x)[:60]
                         if isinstance(x, list) else None)
def test_user_mistakes_end_in_one_line_and_status_2_before_any_model(arguments, message, mistakes_folder, capfd,
                                                                       monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the mistake was reported")

    monkeypatch.setattr("keras_bat.models.encoders.build_encoder", no_model)
    monkeypatch.chdir(mistakes_folder)
    arguments = [argument.format(tmp=mistakes_folder) for argument in arguments]
    try:
        status = run(arguments)
    except SystemExit as exit:  # argparse's usage errors
        status = exit.code
    assert status == 2
    error = capfd.readouterr().err
    lines = [line for line in error.splitlines() if line.strip()]
    assert len(lines) == 1, error
    assert re.search(message, lines[0]), lines[0]
    assert lines[0].startswith(("keras-bat: error:", "keras-bat ")), lines[0]


def test_mistakes_keep_their_traceback_with_debug(mistakes_folder):
    with pytest.raises(ValueError, match="Setting train.steps='abc'"):
        run(["probe", "--set", "train.steps=abc", "--debug"])


def test_a_checkpoint_that_does_not_fit_is_one_line(presets, capfd):
    arguments = ["embed", str(presets / "audio"), "--backbone", str(presets / "small"), "--weights",
                 str(presets / "wide.safetensors"), "--output", str(presets / "out")]
    assert run(arguments) == 2
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "does not fit this BATBackbone: 20 shape mismatches, e.g. 'patch_embed" in lines[0]
    assert len(lines[0]) < 600, lines[0]


def test_an_internal_bug_keeps_its_traceback(presets, monkeypatch):
    def bug(*args, **kwargs):
        raise TypeError("unsupported operand type(s)")  # a bug inside keras-bat, not a user's mistake

    monkeypatch.setattr("keras_bat.workflows.embed.audio_files", bug)
    with pytest.raises(TypeError, match="unsupported operand"):
        run(["embed", str(presets / "audio"), "--backbone", str(presets / "small"), "--output", str(presets / "o")])
    monkeypatch.setattr("keras_bat.workflows.embed.audio_files", lambda *a: int("x"))  # a ValueError from a bug
    with pytest.raises(ValueError, match="invalid literal"):
        run(["embed", str(presets / "audio"), "--backbone", str(presets / "small"), "--output", str(presets / "o")])
    # A ValueError that a builtin raises inside keras-bat's own code is a bug too, not a user's mistake.
    from keras_bat.training import WarmupCosineDecay

    monkeypatch.setattr("keras_bat.workflows.embed.audio_files", lambda *a: WarmupCosineDecay("x", 1, 2))
    with pytest.raises(ValueError, match="could not convert"):
        run(["embed", str(presets / "audio"), "--backbone", str(presets / "small"), "--output", str(presets / "o")])


def test_an_unknown_backend_is_one_line(tmp_path):
    result = subprocess.run([console_script(), "info"], env={**os.environ, "KERAS_BACKEND": "foo"},
                            capture_output=True, text=True)
    assert result.returncode == 0  # info reads versions only
    result = subprocess.run([console_script(), "embed", str(tmp_path)], env={**os.environ, "KERAS_BACKEND": "foo"},
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == ("keras-bat: error: KERAS_BACKEND='foo' is not a Keras backend: use one of "
                                     "tensorflow, jax, torch.")


LIGHT_COMMANDS = [["--help"], ["embed", "--help"], ["probe", "--help"], ["export", "--help"], ["info"],
                  ["--backend", "jax", "info"]]


@pytest.mark.parametrize("arguments", LIGHT_COMMANDS, ids=" ".join)
def test_help_and_info_answer_without_importing_keras_or_a_backend(arguments):
    code = ("import sys, keras_bat.cli\n"
            "try:\n    keras_bat.cli.run(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'keras', 'tensorflow', 'jax', 'torch', "
            "'numpy'})\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code, *arguments], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


@in_one_backend_pass("torch", "python -m keras_bat")
def test_python_m_keras_bat_is_the_command():
    result = subprocess.run([sys.executable, "-m", "keras_bat", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "COMMAND" in result.stdout and "keras-bat" in result.stdout
    result = subprocess.run([sys.executable, "-m", "keras_bat", "probe", "--set", "train.steps=abc"],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().startswith("keras-bat: error: Setting train.steps='abc'"), result.stderr


def test_model_names_a_task_preset_and_backbone_the_encoder(capfd):
    """One meaning per flag: --model is a task preset (tag), the encoder of a probe is --backbone."""
    assert run(["probe", "--model", "bat_base", "--set", "train.steps=1"]) == 2
    assert "--model names a task preset" in capfd.readouterr().err
    assert parse_arguments(["probe", "my_sounds", "--backbone", "hf://me/bat"]).backbone == "hf://me/bat"


def test_defaults_of_the_command_line_are_the_librarys():
    import inspect

    from keras_bat.cli import embed, export, tag
    from keras_bat.export import export_file
    from keras_bat.workflows.embed import run_embed
    from keras_bat.workflows.tag import run_tag

    for module, function in ((embed, run_embed), (tag, run_tag), (export, export_file)):
        signature = {name: parameter.default for name, parameter in inspect.signature(function).parameters.items()
                     if parameter.default is not inspect.Parameter.empty}
        assert module.DEFAULTS == signature, function.__name__


def test_each_command_has_its_own_help_with_every_argument_explained():
    from keras_bat.cli import make_parser

    parser = make_parser()
    commands = parser._subparsers._group_actions[0].choices
    descriptions = {name: command.description for name, command in commands.items()}
    assert len(set(descriptions.values())) == len(descriptions)  # one help text per command
    for name, command in commands.items():
        for action in command._actions:
            assert action.help, f"keras-bat {name} {action.option_strings or action.dest} has no help"
    assert "(default: 8)" in commands["embed"].format_help()


def test_info_prints_the_versions_of_keras_and_the_backends():
    result = subprocess.run([console_script(), "--backend", "torch", "info"], capture_output=True, text=True)
    for name in ("keras-bat", "Keras", "tensorflow", "jax", "torch", "triton", "CUDA"):
        assert name in result.stdout, result.stdout


def test_a_recipe_written_after_set_is_the_recipe():
    from keras_bat.cli import parse

    args = parse(["probe", "--set", "train.steps=5", "data.root=x", "esc50", "--variant", "cgp"])
    assert args.config == "esc50" and args.set == ["train.steps=5", "data.root=x"]
    args = parse(["probe", "esc50", "--set", "train.steps=5", "--set", "head.type=linear"])
    assert args.set == ["train.steps=5", "head.type=linear"]


def test_exporting_an_encoder_asks_for_the_clip_length_instead_of_cropping(presets, capfd):
    assert run(["export", str(presets / "small"), str(presets / "model")]) == 2
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "is an encoder: give the clip length its export takes, --time-frames N" in lines[0]
    assert not (presets / "model").exists()
