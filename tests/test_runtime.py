"""Framework start-up: harmless native notices are filtered out of standard
error, everything else passes, even from a process that crashes; TensorBoard
logging is off, and said so once, where TensorBoard is not installed."""

import importlib.util
import os
import re
import subprocess
import sys

from helpers import require_module
from keras_bat import runtime
from keras_bat.workflows import probe

NOTICES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:17.1 1 port.cc:153] oneDNN custom operations are on. You may see ...",
    "E0000 00:00:17.2 1 util.cc:131] oneDNN supports DT_INT64 only on platforms with AVX-512. Falling back to the "
    "default Eigen-based implementation if present.",
]
CUINIT = "E0000 00:00:17.3 1 cuda_executor.cc:1228] failed call to cuInit: UNKNOWN ERROR (303)"


def _run_filtered(body, env=None):
    """stderr of a Python process that writes inside `filtered_stderr()` (from C-level file descriptor 2)."""
    code = ("import os\nfrom keras_bat.runtime import filtered_stderr\n"
            "with filtered_stderr():\n" + "".join(f"    {line}\n" for line in body))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=60)
    return result.returncode, result.stderr.decode()


def _writes(*lines):
    return [f"os.write(2, {(line + chr(10)).encode()!r})" for line in lines]


def test_harmless_notices_are_dropped_and_real_messages_kept():
    rc, err = _run_filtered(_writes(*NOTICES, "W0000 00:00:17.4 1 op.cc:1] a real warning") +
                            ["print('a Python warning', file=__import__('sys').stderr, flush=True)",
                             "os.write(2, b'\\rprogress 50%')", "os.write(2, b'\\rprogress 100%\\n')"])
    assert rc == 0
    assert err == "W0000 00:00:17.4 1 op.cc:1] a real warning\na Python warning\n\rprogress 50%\rprogress 100%\n"


def test_a_crash_loses_no_message():
    rc, err = _run_filtered(_writes(NOTICES[0], "F0000 fatal: the real reason") + ["os.abort()"])
    assert rc != 0 and err == "F0000 fatal: the real reason\n"


def test_cuinit_failures_are_harmless_only_without_a_gpu(monkeypatch):
    monkeypatch.setattr(runtime, "has_nvidia_device", lambda: False)
    assert re.search(runtime.harmless_pattern(), CUINIT)
    monkeypatch.setattr(runtime, "has_nvidia_device", lambda: True)
    assert not re.search(runtime.harmless_pattern(), CUINIT)


def test_verbose_startup_shows_everything():
    env = dict(os.environ, KERAS_BAT_VERBOSE_STARTUP="1")
    _, err = _run_filtered(_writes(NOTICES[1]), env=env)
    assert "oneDNN custom operations are on" in err


def test_tensorboard_logging_off_when_not_installed(tmp_path, monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "tensorboard"
                        else find_spec(name, *args))
    probe._tensorboard_missing.cache_clear()
    try:
        first = probe.run_callbacks(tmp_path, probe.SkippedFiles())
        second = probe.run_callbacks(tmp_path, probe.SkippedFiles())
    finally:
        probe._tensorboard_missing.cache_clear()
    assert not any(type(c).__name__ == "TensorBoard" for c in first + second)
    assert capsys.readouterr().out.count("TensorBoard logs off: tensorboard not installed") == 1


def test_tensorboard_logging_on_when_installed(tmp_path):
    require_module("tensorboard")  # declared beside TensorFlow: installed by the test command
    probe._tensorboard_missing.cache_clear()
    callbacks = probe.run_callbacks(tmp_path, probe.SkippedFiles())
    assert any(type(c).__name__ == "TensorBoard" for c in callbacks)
