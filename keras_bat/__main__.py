"""`python -m keras_bat`: the `keras-bat` command."""

import sys

from keras_bat.cli import run

sys.exit(run())
