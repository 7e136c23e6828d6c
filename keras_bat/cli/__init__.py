"""The `keras-bat` command line (also `python -m keras_bat`).

`import keras_bat` imports neither Keras nor a backend: this package reads the
command line, answers `--help` and `info` from package metadata alone, checks
the backend's name and sets `KERAS_BACKEND` before a command imports Keras.
Each command is a module here, with `add_parser(commands)` and `run(args)`.

    keras-bat demo
    keras-bat probe esc50 --variant cgp --set data.root=/data/ESC-50
    keras-bat probe my_sounds/ --backbone hf://lrauch/BAT-vit-b16-pretrainedAS2M
    keras-bat finetune as20k --set data.root=/data/AudioSet model.weights=bat.pt
    keras-bat pretrain ssl --set data.root=/data/AudioSet
    keras-bat embed my_audio/ --output embeddings/ --weights bat.pt --frames
    keras-bat tag my_audio/ --model runs/my_sounds/preset --output labels.csv
    keras-bat export runs/demo/probe_cgp_pretrained/preset probe.onnx --format onnx
    keras-bat hear-validate -m my_preset/
    keras-bat --backend jax info

A mistake in what you asked for (a missing file or folder, a bad setting, a
checkpoint that does not fit, an output folder that holds another run: a
`keras_bat.errors.UsageError` or an operating system's error) ends with one
line and exit status 2; `--debug` (or KERAS_BAT_DEBUG=1) shows the traceback.
Ctrl-C ends with one line and exit status 130.
"""

import os
import sys

from keras_bat.cli import embed, export, hear_validate, info, recipes, tag
from keras_bat.cli.common import BACKENDS, HelpFormatter, Parser
from keras_bat.errors import UsageError

DESCRIPTION = """BAT (Better Audio Transformer) and Convex Gated Probing in Keras 3: pretrain, probe, finetune,
embed and export audio encoders on TensorFlow, JAX or PyTorch."""

# Each command's module: `keras-bat COMMAND` runs `COMMANDS[COMMAND].run(args)`.
COMMANDS = {**dict.fromkeys(recipes.COMMANDS, recipes), "embed": embed, "tag": tag, "export": export, "info": info,
            "hear-validate": hear_validate}
# What a user's mistake raises: the message says it all.
USER_ERRORS = (UsageError, OSError)


def make_parser():
    parser = Parser(prog="keras-bat", description=DESCRIPTION, formatter_class=HelpFormatter,
                    epilog="\n\n".join(__doc__.split("\n\n")[2:]))
    parser.add_argument("--backend", choices=BACKENDS,
                        help="Keras backend (default: KERAS_BACKEND, else Keras' own default)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of every error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    recipes.add_parsers(commands)
    for module in (embed, tag, export, info, hear_validate):
        module.add_parser(commands)
    return parser


def parse(argv):
    """The parsed command line."""
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.command in recipes.COMMANDS:
        recipes.take_loose_recipe(args, parser)
    return args


def execute(args):
    """Runs the parsed command; errors raised as they are."""
    if args.command != "info":
        import keras

        if args.backend and keras.backend.backend() != args.backend:
            raise UsageError(f"--backend {args.backend}: Keras is already running with the "
                             f"{keras.backend.backend()} backend (use the keras-bat command, or set KERAS_BACKEND).")
    return COMMANDS[args.command].run(args)


def main(argv=None):
    """Parses `argv` and runs the command, errors raised as they are (for tests and scripts)."""
    return execute(parse(sys.argv[1:] if argv is None else list(argv)))


def fail(message, status=2):
    print(f"keras-bat: error: {message}", file=sys.stderr)
    return status


def run(argv=None):
    """The console script: a user's mistake in one line with exit status 2, harmless framework
    notices filtered out of standard error (`keras_bat.runtime.filtered_stderr`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("KERAS_BAT_DEBUG", "0") not in ("", "0")
    args = parse([argument for argument in argv if argument != "--debug"])  # --debug accepted anywhere
    args.debug = debug
    if args.command == "info":
        return info.run(args)
    backend = args.backend or os.environ.get("KERAS_BACKEND")
    if backend is not None and backend not in BACKENDS:
        return fail(f"KERAS_BACKEND={backend!r} is not a Keras backend: use one of {', '.join(BACKENDS)}.")
    if backend:
        os.environ["KERAS_BACKEND"] = backend
    from keras_bat.runtime import filtered_stderr

    try:
        with filtered_stderr():
            return run_parsed(args)
    except KeyboardInterrupt as interrupt:
        if debug:
            raise
        return fail(str(interrupt) or "interrupted.", 130)


def run_parsed(args):
    """Runs the parsed command, a user's mistake reported in one line with exit status 2."""
    try:
        return execute(args)
    except USER_ERRORS as error:
        if getattr(args, "debug", False):
            raise
        first, *rest = str(error).strip().split("\n")  # long messages: a summary line, then the details
        return fail(f"{' '.join(first.split())} (--debug shows {'every detail and ' if rest else ''}the traceback)")
    except Exception as error:
        from keras_bat.training.distribution import stop_after_lost_process

        if not getattr(args, "debug", False):
            stop_after_lost_process(error)
        raise
