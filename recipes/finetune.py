"""`keras-bat finetune` as a script: python recipes/finetune.py --help"""

import sys

from keras_bat.cli import run

if __name__ == "__main__":
    sys.exit(run(["finetune", *sys.argv[1:]]))
