"""`keras-bat embed` as a script: python recipes/embed.py --help"""

import sys

from keras_bat.cli import run

if __name__ == "__main__":
    sys.exit(run(["embed", *sys.argv[1:]]))
