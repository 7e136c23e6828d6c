"""`keras-bat demo` as a script: python recipes/demo.py --help"""

import sys

from keras_bat.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
