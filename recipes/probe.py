"""`keras-bat probe` as a script: python recipes/probe.py --help"""

import sys

from keras_bat.cli import run

if __name__ == "__main__":
    sys.exit(run(["probe", *sys.argv[1:]]))
