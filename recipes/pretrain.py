"""`keras-bat pretrain` as a script: python recipes/pretrain.py --help"""

import sys

from keras_bat.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
