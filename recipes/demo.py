"""`keras-bat demo` as a script: python recipes/demo.py --help"""

import sys

from keras_bat.cli import run

if __name__ == "__main__":
    sys.exit(run(["demo", *sys.argv[1:]]))
