"""A recipe run killed with SIGKILL at a step inside an epoch, then started
again with the same command, ends with the weights of a run that never
stopped, and redoes at most the configured number of steps."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from audio_files import tone, write
from helpers import in_one_backend_pass, preset_weights, weights_file_arrays
from keras_bat.cli import main
from keras_bat.data.pipeline import StreamPosition

BACKUP_EVERY = 3
STEPS, STEPS_PER_EPOCH = 16, 5  # 4 epochs, the last one 4 steps past the 16th: 20 steps
TINY = ["model.backbone={dim: 32, depth: 2, num_heads: 2}", "model.time_frames=64", "data.clip_seconds=0.64",
        "data.num_workers=2", "train.batch_size=4", f"train.steps={STEPS}", f"train.steps_per_epoch={STEPS_PER_EPOCH}",
        "train.warmup_steps=2", "train.verbose=0", "head.num_prototypes=8", "train.lr=0.01",
        f"train.backup_every_steps={BACKUP_EVERY}", "pretrain.batch_size=2", f"pretrain.steps={STEPS}",
        f"pretrain.steps_per_epoch={STEPS_PER_EPOCH}", "pretrain.warmup_steps=2", "pretrain.decoder_depth=1",
        "pretrain.decoder_heads=2", "pretrain.num_views=2", "pretrain.verbose=0",
        f"pretrain.backup_every_steps={BACKUP_EVERY}", "head.dropout=0.3", "model.drop_path=0.1"]
# Stops the process the hard way after the given step, inside an epoch.
KILLER = """
import os, signal, sys
from keras_bat.training import resume

kill_after = int(sys.argv[1])
on_batch_end = resume._BackupEvery.on_train_batch_end

def on_train_batch_end(self, batch, logs=None):
    on_batch_end(self, batch, logs)
    if self.step == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)

resume._BackupEvery.on_train_batch_end = on_train_batch_end
from keras_bat.cli import main
main(sys.argv[2:])
"""


def _dataset(root):
    """A CSV dataset of tones with one undecodable file among the training clips."""
    root.mkdir()
    rows = ["path,label"]
    for i in range(11):
        label = ("low", "high")[i % 2]
        rows.append(f"{write(root / f'{i}.wav', tone(0.5 + 0.05 * i, frequency=200 + 700 * (i % 2)))},{label}")
    (root / "broken.wav").write_text("not audio")
    rows.insert(4, f"{root / 'broken.wav'},low")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    (root / "test.csv").write_text("\n".join(rows[:1] + rows[5:9]) + "\n")
    return ["data.dataset=csv", f"data.root={root}", "data.options={}"]


def _final_weights(run_dir, command):
    if command == "pretrain":
        return preset_weights(run_dir / "backbone")
    return weights_file_arrays(run_dir / "checkpoint.weights.h5")


RUNS = {
    "pretrain_tf": ("pretrain", ["data.engine=tf"]),
    "pretrain_grain": ("pretrain", ["data.engine=grain"]),
    "finetune": ("probe", ["train.finetune=true", "head.type=linear", "train.lr=0.001"]),
    "probe_from_feature_cache": ("probe", ["train.feature_cache=on"]),
}
# Pretraining resumes on every backend; each input engine's stream position, the same under every
# backend, with one of them: grain under JAX, tf.data under TensorFlow and torch.
ENGINE_PASS = {"pretrain_grain": in_one_backend_pass("jax", "the grain engine's stream position"),
               "pretrain_tf": pytest.mark.skipif(keras.backend.backend() == "jax",
                                                 reason="pretraining resumes under JAX with the grain engine")}


@pytest.mark.parametrize("run", [pytest.param(run, marks=ENGINE_PASS.get(run, ())) for run in sorted(RUNS)])
@pytest.mark.long
def test_killed_run_resumes_to_the_same_weights(run, tmp_path, rng):
    command, settings = RUNS[run]
    args = [command, "--set", *TINY, *_dataset(tmp_path / "data"), *settings]
    main(args + [f"output_dir={tmp_path / 'straight'}"])
    # Backups happen after steps 3, 5 (epoch end), 8, 10 (epoch end), 13, 15, ...: kill between them.
    kill_after = int(os.environ.get("KILL_AFTER") or rng.choice([7, 11, 12, 14, 17]))
    resumed = tmp_path / "resumed"
    python_path = str(Path(__file__).parent) + os.pathsep + os.environ.get("PYTHONPATH", "")
    environment = dict(os.environ, PYTHONPATH=python_path)
    killed = subprocess.run([sys.executable, "-c", KILLER, str(kill_after), *args, f"output_dir={resumed}"],
                            capture_output=True, text=True, env=environment, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    index = json.loads((resumed / "backup" / "latest.json").read_text())
    # At most BACKUP_EVERY steps are redone.
    assert kill_after - BACKUP_EVERY < index["step"] < kill_after, (kill_after, index["step"])
    again = subprocess.run([sys.executable, "-m", "keras_bat", *args, f"output_dir={resumed}"],
                           capture_output=True, text=True, env=environment, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from the backup of step {index['step']} of 20" in again.stdout
    straight, finished = _final_weights(tmp_path / "straight", command), _final_weights(resumed, command)
    assert straight.keys() == finished.keys()
    for name in straight:
        np.testing.assert_array_equal(finished[name], straight[name], err_msg=name)
    history = json.loads((resumed / "results.json").read_text())["history"]
    assert len(history["loss"]) == 4  # the epochs before the kill are part of the history
    assert not (resumed / "backup").exists()


def test_stream_position_skips_undecoded_clips():
    stream = StreamPosition(batch_size=4, start=10)
    assert stream.after(0) == 10 and stream.after(2) == 18
    for position in (12, 9, 19, 25):
        stream.record_undecoded(position)
    # batch 1: 10, 11, 13, 14 (12 did not decode); batch 2: 15..18; batch 3: 20..23 (19 did not)
    assert [stream.after(n) for n in range(4)] == [10, 15, 19, 24]
