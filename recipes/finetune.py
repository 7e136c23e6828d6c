"""`keras-bat finetune` as a script: python recipes/finetune.py --help"""

import sys

from keras_bat.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
