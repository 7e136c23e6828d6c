"""The `keras-bat` console script.

Importing the `keras_bat` package imports Keras, which fixes its backend: this
module, outside the package, reads `--backend` first, sets `KERAS_BACKEND`,
and only then runs `keras_bat.cli`.
"""

import os
import sys

BACKENDS = ("tensorflow", "jax", "torch")


def backend_option(argv):
    """The value of `--backend X` or `--backend=X` given before the command, else `None`."""
    for index, argument in enumerate(argv):
        if argument == "--backend":
            return argv[index + 1] if index + 1 < len(argv) else None
        if argument.startswith("--backend="):
            return argument.split("=", 1)[1]
        if not argument.startswith("-"):  # the command: what follows is its own
            return None
    return None


def run(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    backend = backend_option(argv)
    if backend in BACKENDS:  # anything else is refused by the parser, with the choices
        os.environ["KERAS_BACKEND"] = backend
    from keras_bat.cli import run as run_command

    return run_command(argv)


if __name__ == "__main__":
    sys.exit(run())
