"""`keras-bat pretrain` as a script: python recipes/pretrain.py --help"""

import sys

from keras_bat.cli import run

if __name__ == "__main__":
    sys.exit(run(["pretrain", *sys.argv[1:]]))
