"""`keras-bat embed` as a script: python recipes/embed.py --help"""

import sys

from keras_bat.cli import main

if __name__ == "__main__":
    sys.exit(main(["embed", *sys.argv[1:]]))
