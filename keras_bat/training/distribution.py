"""Multi-device and multi-process training on keras.distribution (JAX): data
parallelism, and model parallelism that shards the encoder's large matrices;
on the TensorFlow backend, data parallelism over one host's devices with
tf.distribute.MirroredStrategy (`set_tf_strategy`).

Several processes (hosts) join one run through `jax.distributed` (the engine
behind `keras.distribution.initialize`): every process gets the same settings
and its own `process_id`; the devices of all processes then form one mesh,
each process feeds its part of every global batch (`ProcessShard`), and only
process 0 writes the run's files (`own_folder`, `is_writer`).
"""

import hashlib
import json
import os
import socket
import sys
import time
from pathlib import Path

import keras

from keras_bat.errors import UsageError

KINDS = ("data_parallel", "model_parallel")


def encoder_layout_map(mesh, model_axis="model"):
    """Shards BAT's attention and MLP matrices over `model_axis`: the
    projections into heads / hidden units column-wise, the projections back
    row-wise (Megatron style); everything else is replicated."""
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[r".*attn/(qkv|gate)/kernel"] = (None, model_axis)
    layout_map[r".*attn/(qkv|gate)/bias"] = (model_axis,)
    layout_map[r".*attn/proj/kernel"] = (model_axis, None)
    layout_map[r".*fc1/kernel"] = (None, model_axis)
    layout_map[r".*fc1/bias"] = (model_axis,)
    layout_map[r".*fc2/kernel"] = (model_axis, None)
    return layout_map


def make_distribution(kind, model_parallel=2, devices=None):
    """A keras.distribution for all (or the given) devices.

    Args:
        kind: `"data_parallel"` (the batch split over devices, weights
            replicated) or `"model_parallel"` (a `batch x model` mesh with
            `model_parallel` devices on the model axis, encoder matrices
            sharded by `encoder_layout_map`).
        model_parallel: int, devices along the model axis.
        devices: optional list of device names (default: all).

    Returns:
        A `keras.distribution.Distribution`; activate it with
        `keras.distribution.set_distribution` before building models.
    """
    if keras.backend.backend() != "jax":
        raise UsageError(f"keras.distribution runs on the JAX backend; this is {keras.backend.backend()}. "
                         "Set KERAS_BACKEND=jax (see the README for the other backends).")
    if kind not in KINDS:
        raise UsageError(f"`kind` must be one of {KINDS}. Received: {kind!r}")
    devices = devices or keras.distribution.list_devices()
    if kind == "data_parallel":
        return keras.distribution.DataParallel(devices=devices)
    if model_parallel < 1 or len(devices) % model_parallel:
        raise UsageError(f"model_parallel={model_parallel} must divide the {len(devices)} devices.")
    mesh = keras.distribution.DeviceMesh((len(devices) // model_parallel, model_parallel), ["batch", "model"],
                                         devices)
    return keras.distribution.ModelParallel(layout_map=encoder_layout_map(mesh), batch_dim_name="batch")


def setup_distribution(config, batch_sizes=None, run_config=None):
    """Activates the `distribution` section of a run config (`kind: null`
    on one process leaves the default single-device placement); with
    several processes, joins them first (`start_processes`) and takes
    `data_parallel` unless another kind is set.

    Args:
        config: the run config's `distribution` section.
        batch_sizes: optional dict `setting -> batch size` of the run's
            training batch sizes, each of which must split evenly over the
            devices of the batch axis.
        run_config: the whole run config, which every process must share.
    """
    config = config or {}
    processes = start_processes(config, run_config, batch_sizes)
    kind = config.get("kind") or ("data_parallel" if processes > 1 else None)
    if not kind:
        return None
    if keras.backend.backend() == "tensorflow":
        return set_tf_strategy(kind, batch_sizes)
    distribution = make_distribution(kind, config.get("model_parallel", 2))
    if processes > 1:  # each process feeds its own part of the global batch (see ProcessShard)
        distribution.auto_shard_dataset = False
    mesh = distribution.device_mesh
    devices = mesh.shape[list(mesh.axis_names).index(distribution.batch_dim_name)]
    require_batches_split(batch_sizes, devices, f"devices of the {kind} batch axis")
    keras.distribution.set_distribution(distribution)
    return distribution


def set_tf_strategy(kind, batch_sizes=None):
    """The TensorFlow backend's `data_parallel`: a `tf.distribute.MirroredStrategy` over
    this machine's GPUs (else its logical CPU devices), set for every model built after
    it (`tf.distribute.experimental_set_strategy`, as `keras.distribution.set_distribution`
    does on JAX). Returns the strategy."""
    import tensorflow as tf

    if kind != "data_parallel":
        raise UsageError(f"distribution.kind={kind} is keras.distribution's (JAX backend); the TensorFlow backend "
                         "runs data_parallel (tf.distribute.MirroredStrategy). Set KERAS_BACKEND=jax.")
    strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MirroredStrategy):  # not set by an earlier run of this process
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy([device.name for device in devices])
        tf.distribute.experimental_set_strategy(strategy)
    require_batches_split(batch_sizes, strategy.num_replicas_in_sync, "devices of tf.distribute.MirroredStrategy")
    return strategy


def require_batches_split(batch_sizes, parts, what):
    """Raises unless every batch size of `batch_sizes` (`setting -> batch size`) splits into
    `parts` equal parts (`what`: the devices or processes they split over)."""
    for setting, batch_size in (batch_sizes or {}).items():
        if batch_size % parts:
            raise UsageError(f"{setting}={batch_size} does not split over the {parts} {what}: "
                             f"use a multiple of {parts}.")


# Keras' own variables for the processes of a run (read by keras.distribution.initialize too).
PROCESS_VARIABLES = {"coordinator": "KERAS_DISTRIBUTION_JOB_ADDRESSES",
                     "num_processes": "KERAS_DISTRIBUTION_NUM_PROCESSES",
                     "process_id": "KERAS_DISTRIBUTION_PROCESS_ID"}


def process_settings(config):
    """`(coordinator, num_processes, process_id)` of the run's processes from the
    `distribution` settings, else Keras' environment variables
    (`KERAS_DISTRIBUTION_JOB_ADDRESSES`, `_NUM_PROCESSES`, `_PROCESS_ID`), else
    `JAX_COORDINATOR_ADDRESS` for the coordinator. `None` for a single process.
    Under SLURM with several tasks and nothing set, `("slurm", None, None)`:
    JAX reads the rest from SLURM's variables."""
    values = {}
    for name, variable in PROCESS_VARIABLES.items():
        value = config.get(name)
        values[name] = os.environ.get(variable) if value is None else value
    values["coordinator"] = values["coordinator"] or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if values["num_processes"] is None and values["coordinator"] is None:
        if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
            return "slurm", None, None
        return None
    count = _whole_number(values["num_processes"], "num_processes", 1)
    if count == 1:
        return None
    if values["coordinator"] is None or values["process_id"] is None:
        missing = [name for name in ("coordinator", "process_id") if values[name] is None]
        raise UsageError(f"A run of {count} processes needs {' and '.join(f'distribution.{m}' for m in missing)} "
                         f"(or {' and '.join(PROCESS_VARIABLES[m] for m in missing)}).")
    index = _whole_number(values["process_id"], "process_id", 0)
    if index >= count:
        raise UsageError(f"distribution.process_id={index} must be below num_processes={count}.")
    coordinator = str(values["coordinator"]).split(",")[0]  # Keras' form lists every job; the first coordinates
    if ":" not in coordinator:
        raise UsageError(f"distribution.coordinator={coordinator!r} must be host:port.")
    return coordinator, count, index


def _whole_number(value, name, least):
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number != float(value) or number < least:
        raise UsageError(f"distribution.{name} must be a whole number >= {least}. Received: {value!r}")
    return number


def start_processes(config, run_config=None, batch_sizes=None):
    """Joins the run's processes (once per process) with `jax.distributed.initialize`;
    returns their count (1 for a single process). A coordinator that cannot be
    reached within `distribution.timeout` seconds, or a port the coordinator cannot
    take, is one clear error; a process that dies later takes the others down
    within the same timeout (JAX's heartbeat). With `run_config`, the joining processes
    check that the others run the same settings; `batch_sizes` (`setting -> batch
    size`) must split over the processes, checked before they join."""
    settings = process_settings(config)
    if keras.backend.backend() == "tensorflow":
        refuse_tf_multi_worker()
    if settings is None:
        return 1
    count = settings[1]
    if count:  # (under SLURM, JAX counts them when they join)
        require_batches_split(batch_sizes, count, "processes")
    if config.get("kind") == "model_parallel":
        raise UsageError("distribution.kind=model_parallel runs within one process; several processes "
                         "take data_parallel (a model axis across hosts would need every checkpoint "
                         "gathered across them).")
    if keras.backend.backend() != "jax":
        raise UsageError(f"A run over several processes needs the JAX backend; this is {keras.backend.backend()}. "
                         "Set KERAS_BACKEND=jax (presets it writes load under every backend).")
    import jax

    if not jax.distributed.is_initialized():
        coordinator, count, index = settings
        timeout = int(config.get("timeout") or 300)
        if coordinator != "slurm":
            _check_coordinator(coordinator, index, timeout)
        jax.distributed.initialize(None if coordinator == "slurm" else coordinator, count, index,
                                   initialization_timeout=timeout, heartbeat_timeout_seconds=timeout,
                                   shutdown_timeout_seconds=timeout)
        if run_config is not None:
            check_same_settings(run_config)
    return jax.process_count()


def refuse_tf_multi_worker():
    """A `TF_CONFIG` cluster of several tasks asks for tf.distribute.MultiWorkerMirroredStrategy,
    which Keras 3's `fit` does not run; refused with the way that works."""
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    if sum(len(tasks) for tasks in cluster.values()) > 1:
        raise UsageError("TF_CONFIG describes a cluster of several tasks, for tf.distribute."
                         "MultiWorkerMirroredStrategy, which Keras 3's model.fit does not run (it fails on the "
                         "strategy's per-replica batches: keras-team/keras#20585). Over several hosts use the JAX "
                         "backend (distribution.num_processes, see the README); on one host the TensorFlow backend "
                         "runs distribution.kind=data_parallel (MirroredStrategy). Unset TF_CONFIG.")


def _check_coordinator(coordinator, index, timeout):
    """Process 0 must be able to take the coordinator's port; the others must reach it
    within `timeout` seconds (JAX itself would abort the process, not raise)."""
    host, port = coordinator.rsplit(":", 1)
    if index == 0:
        with socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("", int(port)))
            except OSError as error:
                raise ConnectionError(f"Process 0 cannot coordinate on port {port} of {coordinator}: "
                                      f"{error.strerror or error}.") from None
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
            return
        except OSError as error:
            if time.monotonic() > deadline:
                raise ConnectionError(f"Process {index} could not reach the coordinator {coordinator} within "
                                      f"{timeout} s ({error.strerror or error}): is process 0 running, and is "
                                      "distribution.coordinator its address?") from None
            time.sleep(0.5)


def process_index():
    """This process's index among the run's processes (0 for a single process)."""
    if keras.backend.backend() != "jax":
        return 0
    import jax

    return jax.process_index()


def process_count():
    if keras.backend.backend() != "jax":
        return 1
    import jax

    return jax.process_count()


def is_writer():
    """Whether this process writes the run's files (logs, backups, presets, results): process 0."""
    return process_index() == 0


def process_0_says(decision):
    """Process 0's yes or no, on every process: for what each process would decide by
    itself from a clock or from the files in its own folder, where all must take
    the same path."""
    if process_count() == 1:
        return bool(decision)
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(bool(decision))))


def own_folder(folder):
    """Where this process writes a run's files: `folder` on process 0; on the others a
    scratch folder, deleted at exit. Every process runs the same program, saving
    included (Keras makes variables while it saves, and under a distribution over
    several processes each new variable is a step all of them take together); one
    writes."""
    if is_writer():
        return Path(folder)
    import atexit
    import shutil
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix=f"keras-bat-process-{process_index()}-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    return scratch


def writer_first(function, *args, **kwargs):
    """`function(*args, **kwargs)` run by process 0 first, then by the others: what it
    writes (a generated data set, a download) is written once, then read."""
    if process_count() == 1:
        return function(*args, **kwargs)
    from jax.experimental import multihost_utils

    result = function(*args, **kwargs) if is_writer() else None
    multihost_utils.sync_global_devices(f"keras-bat: {getattr(function, '__name__', 'setup')} by process 0")
    return result if is_writer() else function(*args, **kwargs)


def stop_after_lost_process(error):
    """Ends this process at once, with one line, when `error` is a collective operation that
    failed in a run over several processes (most often: another process died). Returns
    otherwise. The process exits with status 3 without waiting for JAX's shutdown, which
    would wait for the lost process."""
    if process_count() == 1 or type(error).__name__ != "JaxRuntimeError":
        return
    first = " ".join(str(error).strip().split("\n")[0].split())
    print(f"keras-bat: error: process {process_index()} of {process_count()} stopped: {first} (with several "
          "processes this most often means another one died; started again, every process resumes from the "
          "run's last backup)", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(3)


def check_same_settings(run_config):
    """Raises when another process runs different settings (its process id and the
    coordinator's address aside), naming the sections that differ."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    shared = {name: value for name, value in run_config.items() if name != "distribution"}
    shared["distribution"] = {k: v for k, v in (run_config.get("distribution") or {}).items()
                              if k not in ("process_id", "coordinator")}
    names = sorted(shared)
    digests = np.array([int(hashlib.sha256(json.dumps(shared[name], sort_keys=True, default=str).encode())
                            .hexdigest()[:7], 16) for name in names], "int32")
    every = np.asarray(multihost_utils.process_allgather(digests))
    differ = [name for i, name in enumerate(names) if len(set(every[:, i].tolist())) > 1]
    if differ:
        processes = [p for p in range(len(every)) if not np.array_equal(every[p], every[jax.process_index()])]
        raise UsageError(f"The processes run different settings: {', '.join(differ)} of process "
                         f"{jax.process_index()} differ from those of process(es) {processes}; start every "
                         "process with the same recipe and --set options.")


class ProcessShard:
    """This process's part of every global batch: of each run of `batch_size`
    consecutive positions of the input stream, process `index` of `count` takes
    the `batch_size / count` positions from `index * batch_size / count` on. The
    processes' parts are disjoint and, batch by batch, make up exactly the stream
    one process would read, so the global batches (and every clip's random
    handling, which its position decides) equal a single process's."""

    def __init__(self, index=0, count=1):
        self.index, self.count = int(index), int(count)

    @classmethod
    def of_this_process(cls):
        return cls(process_index(), process_count())

    def local_batch_size(self, batch_size):
        if batch_size % self.count:
            raise UsageError(f"A batch of {batch_size} does not split over {self.count} processes.")
        return batch_size // self.count
