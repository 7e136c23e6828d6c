"""`keras-bat probe` as a script: python recipes/probe.py --help"""

import sys

from keras_bat.cli import main

if __name__ == "__main__":
    sys.exit(main(["probe", *sys.argv[1:]]))
