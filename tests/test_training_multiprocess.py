"""Runs over several processes (JAX): `keras-bat pretrain` and a CGP `keras-bat probe` on 2
processes of 2 virtual CPU devices each give, after 6 steps, the weights of 1 device with the
same global batch (pretraining: also of 1 process on 4 devices); a process killed mid-run takes
the other down within the timeout and a restart of both resumes to the uninterrupted run's
weights; bad settings stop every process with one line."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from helpers import preset_weights

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax",
                                reason="runs over several processes are JAX's (tested in the JAX pass)")

DATA = {"dataset": "synthetic", "options": {"splits": {"train": 32, "test": 8}, "clip_seconds": 1.28},
        "clip_seconds": 1.28, "num_workers": 1}
MODEL = {"backbone": {"dim": 32, "depth": 2, "num_heads": 2}, "time_frames": 128}
RECIPES = {
    "pretrain": {"name": "processes_pretrain", "seed": 0, "data": DATA, "model": MODEL,
                 "pretrain": {"decoder_depth": 1, "decoder_heads": 2, "num_views": 2, "batch_size": 8, "steps": 6,
                              "steps_per_epoch": 3, "lr": 1e-3, "warmup_steps": 2, "verbose": 0,
                              "export": "student", "snapshot_steps": [0]}},
    "probe": {"name": "processes_probe", "seed": 0, "data": DATA, "model": MODEL,
              "head": {"type": "cgp", "num_prototypes": 16},
              "train": {"batch_size": 8, "steps": 6, "steps_per_epoch": 3, "lr": 1e-2, "warmup_steps": 2,
                        "verbose": 0, "feature_cache": "off"}},
}
TIMEOUT = 20  # distribution.timeout of these runs, seconds


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(command, recipe, output, devices, settings=(), log=None):
    """One `keras-bat` process with `devices` virtual CPU devices."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2",
               XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}")
    arguments = [sys.executable, "-m", "keras_bat", command, str(recipe), "--set",
                 f"output_dir={output}", f"distribution.timeout={TIMEOUT}", *settings]
    return subprocess.Popen(arguments, env=env, stdout=log or subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def start_processes(command, recipe, output, count=2, devices=2, settings=(), per_process=None):
    coordinator = f"127.0.0.1:{free_port()}"
    return [start(command, recipe, output, devices,
                  [f"distribution.num_processes={count}", f"distribution.process_id={index}",
                   f"distribution.coordinator={coordinator}", *settings, *(per_process or {}).get(index, ())])
            for index in range(count)]


def finish(processes, timeout=600):
    """Each process's exit status and output; none is left running."""
    results = []
    try:
        for process in processes:
            output, _ = process.communicate(timeout=timeout)
            results.append((process.returncode, output))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def write_recipe(folder, command):
    path = Path(folder) / f"{command}.yaml"
    path.write_text(yaml.safe_dump({"description": "a small run over several processes",
                                    "base": RECIPES[command]}))
    return path


def weights_of(command, output):
    """The run's trained weights, by name (pretraining: the exported student; probing: the task
    preset's head and backbone)."""
    if command == "pretrain":
        return preset_weights(Path(output) / "backbone")
    from keras_bat.models import AudioClassifier

    model = AudioClassifier.from_preset(str(Path(output) / "preset"))
    return {variable.path: keras.ops.convert_to_numpy(variable.value) for variable in model.weights}


def largest_difference(a, b):
    assert sorted(a) == sorted(b)
    return max(float(np.max(np.abs(np.asarray(a[name], "float64") - b[name]))) for name in a)


def run_layouts(folder, command):
    """`command` on 1 device, on 4 devices of 1 process (pretraining only) and on 2 processes of 2
    devices, all at once: `{layout: output folder}`."""
    folder.mkdir()
    recipe = write_recipe(folder, command)
    layouts = {"one_device": [start(command, recipe, folder / "one_device", 1)]}
    if command == "pretrain":  # 1 x 4 once: the probe's data parallelism is the same
        layouts["four_devices"] = [start(command, recipe, folder / "four_devices", 4,
                                         ["distribution.kind=data_parallel"])]
    layouts["two_processes"] = start_processes(command, recipe, folder / "two_processes")
    for layout, processes in layouts.items():
        for code, output in finish(processes):
            assert code == 0, f"{command} {layout}:\n{output[-3000:]}"
    return {layout: folder / layout for layout in layouts}


@pytest.mark.long
def test_processes_train_the_weights_of_one_device(tmp_path):
    for command in RECIPES:  # one after the other: two commands' processes at once would crowd 2 cores
        runs = run_layouts(tmp_path / command, command)
        one = weights_of(command, runs["one_device"])
        for layout in sorted(set(runs) - {"one_device"}):
            assert largest_difference(one, weights_of(command, runs[layout])) <= 5e-6, (command, layout)
        results = {layout: json.loads((runs[layout] / "results.json").read_text())
                   for layout in ("one_device", "two_processes")}
        np.testing.assert_allclose(results["two_processes"]["history"]["loss"],
                                   results["one_device"]["history"]["loss"], rtol=1e-5)
        if command == "pretrain":  # six steps moved the weights well beyond the tolerance
            initial = preset_weights(runs["one_device"] / "snapshots" / "step_0")
            assert largest_difference(one, initial) > 1e-3
        else:
            assert results["two_processes"]["metrics"] == results["one_device"]["metrics"]
        # Only process 0 writes.
        written = {path.name for path in runs["two_processes"].iterdir()}
        assert {"results.json", "log.csv", "config.yaml"} <= written
        assert "backup" not in written  # cleared when the run ended


def recordings_with_bad_files(folder, good=13, bad=3):
    """A folder of noise recordings and files that do not decode: the processes skip different
    numbers of clips, so each resumes from a stream position of its own."""
    import soundfile

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(good):
        soundfile.write(folder / f"clip_{i:02d}.wav", 0.1 * rng.standard_normal(20480).astype("float32"), 16000)
    for i in range(bad):
        (folder / f"broken_{i}.wav").write_bytes(b"not audio")
    return folder


@pytest.mark.long
def test_a_killed_process_stops_the_run_and_a_restart_resumes_exactly(tmp_path):
    recipe = dict(RECIPES["pretrain"], data={"dataset": "audio_files", "clip_seconds": 1.28, "num_workers": 1,
                                             "root": str(recordings_with_bad_files(tmp_path / "recordings"))})
    recipe_file = tmp_path / "pretrain.yaml"
    recipe_file.write_text(yaml.safe_dump({"description": "pretraining on files of which some do not decode",
                                           "base": recipe}))
    for code, text in finish(start_processes("pretrain", recipe_file, tmp_path / "uninterrupted")):
        assert code == 0, text[-3000:]

    output = tmp_path / "killed"
    logs = [open(tmp_path / f"process_{index}.log", "w") for index in range(2)]
    settings = ["pretrain.backup_every_steps=1"]
    coordinator = f"127.0.0.1:{free_port()}"
    processes = [start("pretrain", recipe_file, output, 2, [
        "distribution.num_processes=2", f"distribution.process_id={index}", f"distribution.coordinator={coordinator}",
        *settings], log=logs[index]) for index in range(2)]
    index_file = output / "backup" / "latest.json"
    try:
        deadline = time.monotonic() + 300
        while not (index_file.exists() and 3 <= json.loads(index_file.read_text())["step"] < 6):
            assert processes[0].poll() is None and time.monotonic() < deadline, "no backup before the run ended"
            time.sleep(0.05)
        processes[1].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        code = processes[0].wait(timeout=TIMEOUT + 60)  # the survivor stops: no hang past the timeout
        assert time.monotonic() - killed_at <= TIMEOUT + 60 and code != 0
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
        for log in logs:
            log.close()
    survivor = (tmp_path / "process_0.log").read_text()
    if code == 3:  # a collective failed: keras-bat's line
        assert "keras-bat: error: process 0 of 2 stopped" in survivor, survivor[-2000:]
    else:  # JAX's heartbeat ended it
        assert "another task died" in survivor, survivor[-2000:]
    backup = json.loads(index_file.read_text())
    assert 3 <= backup["step"] < 6
    step = backup["step"]
    assert backup["positions"] != [8 * step, 8 * step + 4]  # files were skipped: positions off the batch grid

    restarted = finish(start_processes("pretrain", recipe_file, output, settings=settings))
    for code, text in restarted:
        assert code == 0, text[-3000:]
    assert "resuming from the backup of step" in restarted[0][1]
    assert largest_difference(weights_of("pretrain", output), weights_of("pretrain", tmp_path / "uninterrupted")) == 0


@pytest.mark.long
def test_bad_process_settings_stop_with_one_line(tmp_path):
    recipe = write_recipe(tmp_path, "probe")
    # A batch that does not split over the processes: refused before any process joins.
    [(code, output)] = finish([start("probe", recipe, tmp_path / "odd", 1, [
        "distribution.num_processes=3", "distribution.process_id=0", "distribution.coordinator=127.0.0.1:1"])])
    assert code == 2 and "train.batch_size=8 does not split over the 3 processes" in output, output[-2000:]
    # No coordinator at the address: a clear error within the timeout, not a hang or a crash.
    began = time.monotonic()
    nobody = f"127.0.0.1:{free_port()}"
    [(code, output)] = finish([start("probe", recipe, tmp_path / "alone", 1, [
        "distribution.num_processes=2", "distribution.process_id=1", f"distribution.coordinator={nobody}",
        "distribution.timeout=3"])])
    assert code == 2 and "could not reach the coordinator" in output, output[-2000:]
    assert time.monotonic() - began < 60
    # Processes started with different settings: every process says which.
    results = finish(start_processes("probe", recipe, tmp_path / "mismatch", per_process={1: ["seed=1"]}))
    for code, output in results:
        assert code == 2 and "The processes run different settings: seed" in output, output[-2000:]
