"""Training that survives a kill at any step and resumes to the same weights.

`fit_resumable` runs `model.fit` for a number of epochs and backs the run up
every few steps: every model variable (weights, non-trainable state such as
an EMA teacher, the states of the layers' random generators), the optimizer's variables,
the number of steps done, the input stream's position and the finished
epochs' logs. A backup is written to a new file, flushed, and only then made
the latest by an atomic rename of its small index file, so a kill during a
write leaves the previous backup usable. Run again, the same call restores
the latest backup, finishes the interrupted epoch from the step where the
backup was taken (with the input stream restarted at the same clip), then
runs the remaining epochs.

Over several processes (`keras_bat.training.distribution`) process 0 writes
the backups, with every process's stream position, and every process
restores from them (the backup folder must be shared).
"""

import glob
import json
import os
import time

import keras
import numpy as np

from keras_bat.errors import UsageError
from keras_bat.training.distribution import is_writer, process_0_says, process_count, process_index

INDEX_FILE = "latest.json"


def _state_variables(model):
    """Every variable whose value a resumed run needs, in a fixed order."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    variables, seen = [], set()
    for variable in list(model.variables) + list(model.optimizer.variables if model.optimizer else []):
        if id(variable) not in seen:
            seen.add(id(variable))
            variables.append(variable)
    return variables


class TrainingBackup:
    """The backups of one run in `directory`.

    Args:
        directory: str, folder of the backups (created).
    """

    def __init__(self, directory):
        self.directory = os.fspath(directory)

    def latest(self):
        """The index of the latest backup (`step`, `position`, `history`,
        `file`), or `None`."""
        path = os.path.join(self.directory, INDEX_FILE)
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)

    def save(self, model, step, position, history):
        """Writes the model's state after `step` steps; `position` is where
        the input stream continues. Every process calls it; process 0 writes,
        with each process's position."""
        if hasattr(model, "jax_state_sync"):  # JAX keeps the live values outside the variables during fit
            model.jax_state_sync()
        positions = _gather_positions(position)
        if not is_writer():
            return
        os.makedirs(self.directory, exist_ok=True)
        name = f"step-{step:010d}.npz"
        temporary = os.path.join(self.directory, f".{name}.partial")
        with open(temporary, "wb") as f:
            # (through a tensor: a tf.distribute variable synced on read, e.g. a metric's, gives its aggregate)
            np.savez(f, *[keras.ops.convert_to_numpy(keras.ops.convert_to_tensor(v)) for v in _state_variables(model)])
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, os.path.join(self.directory, name))
        index = {"step": int(step), "position": positions[0], "history": history, "file": name}
        if len(positions) > 1:
            index["positions"] = positions
        _write_atomically(os.path.join(self.directory, INDEX_FILE), json.dumps(index))
        for old in glob.glob(os.path.join(self.directory, "step-*.npz")):
            if os.path.basename(old) != name:
                os.remove(old)

    def restore(self, model):
        """Loads the latest backup into `model` (built and compiled); returns
        its index, or `None` when there is none."""
        index = self.latest()
        if index is None:
            return None
        path = os.path.join(self.directory, index["file"])
        variables = _state_variables(model)
        with np.load(path) as arrays:
            values = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
        if len(values) != len(variables) or any(tuple(v.shape) != a.shape for v, a in zip(variables, values)):
            raise UsageError(f"The backup {path!r} was written by another model or optimizer "
                             f"({len(values)} arrays for {len(variables)} variables); delete {self.directory!r} "
                             "to start the run afresh.")
        for variable, value in zip(variables, values):
            variable.assign(value)
        if process_count() > 1:
            if len(index.get("positions", ())) != process_count():
                raise UsageError(f"The backup {path!r} was written by a run of {len(index.get('positions', [0]))} "
                                 f"process(es), not {process_count()}; resume it with as many, or delete "
                                 f"{self.directory!r}.")
            index = {**index, "position": index["positions"][process_index()]}
        return index

    def clear(self):
        if not is_writer():
            return
        for path in glob.glob(os.path.join(self.directory, "*")) + glob.glob(os.path.join(self.directory, ".*")):
            os.remove(path)
        if os.path.isdir(self.directory):
            os.rmdir(self.directory)


def _gather_positions(position):
    """Every process's stream position (a list, process 0's first)."""
    if process_count() == 1:
        return [int(position)]
    from jax.experimental import multihost_utils

    return [int(p) for p in np.asarray(multihost_utils.process_allgather(np.int32(position))).ravel()]


def _write_atomically(path, text):
    temporary = path + ".partial"
    with open(temporary, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


class _BackupEvery(keras.callbacks.Callback):
    """Counts the steps of one `fit` segment and backs up every
    `every_steps` steps or `every_minutes` minutes, and at every epoch end."""

    def __init__(self, backup, stream, first_step, history, every_steps, every_minutes):
        super().__init__()
        self.backup, self.stream = backup, stream
        self.first_step, self.step = first_step, first_step
        self.history = history
        self.every_steps, self.every_minutes = every_steps, every_minutes
        self._last_save = (first_step, time.monotonic())

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        steps_since, since = self.step - self._last_save[0], time.monotonic() - self._last_save[1]
        if ((self.every_steps and steps_since >= self.every_steps)
                or (not self.every_steps and process_0_says(since >= 60 * self.every_minutes))):
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self._save()

    def _save(self):
        self.backup.save(self.model, self.step, self.position, self.history)
        self._last_save = (self.step, time.monotonic())

    @property
    def position(self):
        return self.stream.after(self.step - self.first_step)


def fit_resumable(model, make_train_data, epochs, steps_per_epoch, backup_dir, every_steps=None,
                  every_minutes=5.0, callbacks=(), keep_backup=False, **fit_kwargs):
    """`model.fit` over `epochs` epochs of `steps_per_epoch` steps that resumes
    exactly after a kill at any step.

    Args:
        model: a built, compiled Keras model.
        make_train_data: callable `position -> (data, stream)`: the training
            data starting at stream position `position` (0 for a new run), and
            a `StreamPosition` whose `after(n)` is the position after `n`
            batches (see `keras_bat.data.make_pipeline`).
        epochs: int, total number of epochs.
        steps_per_epoch: int.
        backup_dir: str, folder of the backups.
        every_steps: int or `None`, back up every this many steps; `None`
            backs up every `every_minutes` minutes. Backups are also written
            at every epoch end.
        every_minutes: float. Defaults to `5.0`.
        callbacks: further Keras callbacks.
        keep_backup: bool, keep the last backup when training ends (a rerun
            then trains nothing). Defaults to `False`: it is deleted.
        **fit_kwargs: passed to `fit` (`validation_data`, `verbose`, ...).

    Returns:
        Dict `metric -> list of per-epoch values` of the whole run, the
        epochs before an interruption included.
    """
    backup = TrainingBackup(backup_dir)
    index = backup.restore(model) or {"step": 0, "position": 0, "history": {}}
    step, position, history = index["step"], index["position"], index["history"]
    total = epochs * steps_per_epoch
    if step:
        print(f"resuming from the backup of step {step} of {total} in {backup_dir}")
    while step < total:
        epoch, done = divmod(step, steps_per_epoch)
        data, stream = make_train_data(position)
        saver = _BackupEvery(backup, stream, step, history, every_steps, every_minutes)
        # An interrupted epoch is finished on its own, then whole epochs follow.
        model.fit(data, initial_epoch=epoch, epochs=epoch + 1 if done else epochs,
                  steps_per_epoch=steps_per_epoch - done, callbacks=[*callbacks, saver], **fit_kwargs)
        if saver.step == step or model.stop_training:  # the data ran out, or a callback stopped the run
            break
        step, position = saver.step, saver.position
    if not keep_backup:
        backup.clear()
    return history
