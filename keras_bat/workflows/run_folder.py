"""Output folders that describe themselves.

A run writes `run.json` into its folder before anything else: the command,
what defines its result (`identity`: inputs, model, settings), the versions
that computed it, and its status (`partial` until the last file is in place,
then `complete`; `failed` when nothing could be computed). A rerun of the
same command resumes a partial run; a folder that holds another run, or files
keras-bat did not write, is refused unless the user asks to overwrite it.
Ctrl-C stops such a run between two steps (`StopBetweenSteps`), never inside
a framework's native code.
"""

import datetime
import hashlib
import importlib.metadata
import json
import os
import signal
import threading
from pathlib import Path

RUN_FILE = "run.json"


class StopBetweenSteps:
    """Inside `with StopBetweenSteps() as stop:`, Ctrl-C (SIGINT) is noted and raised as
    `KeyboardInterrupt` at the next `stop.check()`, a point where the run holds no framework
    call: an interrupt raised inside TensorFlow's native code can abort the process before the
    run is marked partial. A second Ctrl-C raises at once. Outside the main thread, which alone
    receives signals, it changes nothing."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._note)
        return self

    def _note(self, signal_number, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self):
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, *exception):
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.SIG_DFL)
        return False


def audio_progress(total_seconds, description):
    """A tqdm bar over seconds of audio; an update past the total (a float sum's rounding) stops at it."""
    from tqdm.auto import tqdm

    class AudioProgress(tqdm):
        def update(self, seconds=1):
            return super().update(min(seconds, self.total - self.n))

    return AudioProgress(total=total_seconds, unit="s audio", desc=description,
                         bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s of audio [{elapsed}<{remaining}]")


def package_versions(names=("keras-bat", "keras", "numpy", "tensorflow", "jax", "torch", "triton")):
    """`{name: version}` of the installed packages among `names`, read without importing them."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def file_fingerprint(path):
    """What identifies a file's content cheaply: its resolved path, size and modification time."""
    stat = os.stat(path)
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def digest(value):
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def check_writable_folder(folder, what="output folder"):
    """Raises a one-line error unless `folder` is (or can be made) a writable folder."""
    folder = Path(folder)
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if existing == folder and not folder.is_dir():
        raise NotADirectoryError(f"The {what} {folder} is a file, not a folder.")
    if existing != folder and not existing.is_dir():
        raise NotADirectoryError(f"The {what} {folder} cannot be made: {existing} is a file.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"The {what} {folder} is not writable ({existing}: permission denied).")


def write_json_atomically(path, value):
    """Writes `value` as JSON to `path` through a temporary file and a rename: readers see the old
    file or the new one, never half of one."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(temporary, path)


class RunFolder:
    """The folder of one run.

    Args:
        folder: str or path.
        command: str, e.g. `"embed"`.
        identity: JSON-serialisable dict: everything that changes the result.
        outputs: names of the files the run writes (removed when it starts over).
    """

    def __init__(self, folder, command, identity, outputs):
        self.folder = Path(folder)
        self.command, self.identity, self.outputs = command, identity, tuple(outputs)
        self.started = None

    def read(self):
        """The folder's `run.json`, or `None`."""
        try:
            return json.loads((self.folder / RUN_FILE).read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError):
            return {"status": "unreadable"}

    def open(self, resume=None, overwrite=False):
        """Decides what to do with the folder, before any work.

        Args:
            resume: `None` (resume a partial run of the same command), `True`
                (the same, said explicitly) or `False` (start again).
            overwrite: bool, replace whatever run the folder holds.

        Returns:
            `"new"` (start), `"resume"` (continue the partial run) or
            `"complete"` (the same run is already complete).

        Raises:
            FileExistsError: the folder holds another run or other files.
        """
        check_writable_folder(self.folder)
        previous = self.read()
        same = previous is not None and previous.get("command") == self.command and \
            previous.get("identity") == self.identity
        if not overwrite:
            if previous is None:
                foreign = sorted(p.name for p in self.folder.iterdir()) if self.folder.is_dir() else []
                if foreign:
                    raise FileExistsError(f"{self.folder} already holds files ({', '.join(foreign[:3])}"
                                          f"{', ...' if len(foreign) > 3 else ''}) that no keras-bat run "
                                          "described: choose another --output, or pass --overwrite.")
            elif not same:
                changed = sorted(key for key in set(self.identity) | set(previous.get("identity") or {})
                                 if (previous.get("identity") or {}).get(key) != self.identity.get(key))
                raise FileExistsError(f"{self.folder} holds another {previous.get('command', 'unknown')} run "
                                      f"({previous.get('status')}; it differs in: {', '.join(changed) or 'command'}):"
                                      " choose another --output, or pass --overwrite to replace it.")
            elif previous.get("status") == "complete":
                return "complete"
            elif previous.get("status") == "partial" and resume is not False:
                self.started = previous.get("started")
                return "resume"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.mark("partial")  # first: from here on nothing in the folder passes for a finished result
        for name in self.outputs:
            for path in (self.folder / name, self.folder / f"{name}.partial"):
                path.unlink(missing_ok=True)
        return "new"

    def mark(self, status, **details):
        """Writes `run.json` with `status` (`partial`, `complete` or `failed`)."""
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.started = self.started or now
        write_json_atomically(self.folder / RUN_FILE, {
            "command": self.command, "status": status, "identity": self.identity, "versions": package_versions(),
            "started": self.started,
            "finished": now if status != "partial" else None, **details})
