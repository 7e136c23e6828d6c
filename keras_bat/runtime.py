"""Framework start-up without noise.

TensorFlow and XLA print start-up notices from C++ (through absl, which
ignores `TF_CPP_MIN_LOG_LEVEL` until it is initialised) that read like errors
to a newcomer. `filtered_stderr()` passes the process's standard error through
a small filter process that drops the lines known to be harmless notices, so
that real warnings and errors stay visible, even from a process that crashes.
"""

import contextlib
import os
import subprocess
import sys

# Notices that say nothing is wrong.
HARMLESS_LINES = [
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"oneDNN custom operations are on",
    r"oneDNN supports DT_\w+ only on platforms with AVX-512\. Falling back to the default Eigen-based implementation",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"^To enable the following instructions: .* rebuild TensorFlow",
    r"Unable to register (cuDNN|cuFFT|cuBLAS) factory: Attempting to register factory",
    r"computation placer already registered",
    r"TF-TRT Warning: Could not find TensorRT",
    r"Could not find cuda drivers on your machine, GPU will not be used",
]
# Harmless only where the machine has no NVIDIA GPU at all.
NO_GPU_LINES = [
    r"failed call to cuInit",
    r"could not retrieve CUDA device count",
]


def has_nvidia_device():
    return os.path.exists("/dev/nvidia0") or os.path.exists("/proc/driver/nvidia/gpus")


def harmless_pattern():
    """One regular expression matching every harmless line on this machine."""
    patterns = HARMLESS_LINES + ([] if has_nvidia_device() else NO_GPU_LINES)
    return "|".join(f"(?:{p})" for p in patterns)


@contextlib.contextmanager
def filtered_stderr():
    """Passes file descriptor 2 (native code's and Python's standard error)
    through `keras_bat/stderr_filter.py`, in a process of its own, inside the
    block; the lines matched by `harmless_pattern()` are dropped, everything
    else is passed on as it comes. Set `KERAS_BAT_VERBOSE_STARTUP=1` to see
    everything."""
    if os.environ.get("KERAS_BAT_VERBOSE_STARTUP", "0") not in ("", "0"):
        yield
        return
    try:
        sys.stderr.flush()
        original = os.dup(2)
    except (OSError, ValueError):  # no file descriptor 2 to filter
        yield
        return
    read_end, write_end = os.pipe()
    try:
        script = os.path.join(os.path.dirname(__file__), "stderr_filter.py")
        child = subprocess.Popen([sys.executable, "-I", script, harmless_pattern()], stdin=read_end,
                                 stdout=original, stderr=original)
    except OSError:  # e.g. no interpreter to start: leave standard error as it is
        os.close(read_end), os.close(write_end), os.close(original)
        yield
        return
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end held here: the filter sees its end
        os.close(original)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a subprocess started inside still writes to it; it ends with them
            pass


def start_frameworks():
    """Imports Keras and its backend with harmless notices filtered out; under
    the TensorFlow backend its devices start inside the filter too.
    TensorFlow's own info lines are off unless `TF_CPP_MIN_LOG_LEVEL` says
    otherwise. Once Keras is imported there is nothing left to do."""
    if "keras" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    with filtered_stderr():
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.config.list_logical_devices()


def import_tensorflow():
    """TensorFlow, imported with harmless notices filtered out. When it only
    feeds data (the Keras backend is JAX or torch) it is kept off the GPUs, so
    that it neither starts CUDA nor reserves GPU memory the backend needs."""
    if "tensorflow" not in sys.modules:
        start_frameworks()  # Keras first: under the torch backend the reverse order aborts (two LLVMs)
    if "tensorflow" in sys.modules:  # the backend, or imported by the user: left as it is
        return sys.modules["tensorflow"]
    with filtered_stderr():
        import tensorflow as tf

        tf.config.set_visible_devices([], "GPU")
        tf.config.list_logical_devices()
    return tf
