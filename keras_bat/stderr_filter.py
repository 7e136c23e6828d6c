"""Copies standard input to standard output, dropping the complete lines that
match the regular expression given as first argument. Text without a line end
yet is passed on at once (progress bars), unless it starts like a native log
line ("I0000 ...", "W0000 ...", "E0000 ...", "WARNING: All log ..."): that
waits for its line end.

Run as a separate process by `keras_bat.runtime.filtered_stderr()`, so that it
outlives a crash of the process whose output it filters; it imports nothing
from keras_bat.
"""

import os
import re
import signal
import sys

NATIVE_LOG_LEVELS = (b"I", b"W", b"E", b"F")  # absl's first letter: info, warning, error, fatal


def main():
    # Ctrl-C or a termination of the process group stops the filtered process;
    # the filter stays until that process is gone, to pass on its last words.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    harmless = re.compile(sys.argv[1].encode())
    pending = b""
    while chunk := os.read(0, 1 << 16):
        *lines, pending = (pending + chunk).split(b"\n")
        kept = b"".join(line + b"\n" for line in lines if not harmless.search(line))
        if pending and pending[:1] not in NATIVE_LOG_LEVELS:
            kept, pending = kept + pending, b""
        if kept:
            os.write(1, kept)
    if pending and not harmless.search(pending):
        os.write(1, pending)


if __name__ == "__main__":
    main()
