"""The `keras-bat` command: pretrain, probe, finetune, embed, demo.

    keras-bat demo
    keras-bat probe esc50 --variant cgp --set data.root=/data/ESC-50
    keras-bat finetune as20k --set data.root=/data/AudioSet model.weights=bat.pt
    keras-bat pretrain ssl --set data.root=/data/AudioSet
    keras-bat embed my_audio/ --output embeddings/ --weights bat.pt --frames
    keras-bat export my_probe_preset/ probe.onnx --format onnx
    keras-bat hear-validate -m my_preset/
    keras-bat --backend jax info

A mistake in what you asked for (a missing file or folder, a bad setting, a
checkpoint that does not fit) ends with one line and exit status 2; `--debug`
(or KERAS_BAT_DEBUG=1) shows the traceback.
"""

import argparse
import importlib.util
import json
import os
import sys
import traceback

from keras_bat.runtime import filtered_stderr, import_tensorflow
from keras_bat.workflows.config import builtin_recipes


def _parser():
    parser = argparse.ArgumentParser(prog="keras-bat", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--backend", choices=("tensorflow", "jax", "torch"),
                        help="Keras backend (default: KERAS_BACKEND, else Keras' default)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of every error")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("pretrain", "self-supervised pretraining"), ("probe", "train a probe on a frozen encoder"),
                       ("finetune", "finetune the whole model"), ("demo", "the laptop demo on generated data")):
        command = commands.add_parser(name, help=text)
        command.add_argument("config", nargs="?",
                             help=f"a built-in recipe ({', '.join(builtin_recipes())}) or a YAML file; "
                                  "the demo's embedded config if omitted")
        command.add_argument("--variant", help="variant of the recipe, e.g. cgp, lp, h2t (see the file); "
                                               "finetune reads the recipe's finetune variant by default")
        command.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                             help="overrides, e.g. train.steps=100 data.root=/data/esc50")
        command.add_argument("--output-dir", help="where logs, checkpoints and results go")
    embed = commands.add_parser("embed", help="write embeddings of a folder of audio")
    embed.add_argument("folder")
    embed.add_argument("--output", default="embeddings", help="folder for the arrays and the manifest")
    embed.add_argument("--encoder", default="bat", choices=["bat", "eat", "sslam", "beats"])
    embed.add_argument("--backbone", default="bat_base", help="preset name or preset directory")
    embed.add_argument("--weights", help="official checkpoint (.pt / .safetensors / folder)")
    embed.add_argument("--checkpoint-key", help="e.g. ema_encoder for the pretraining teacher")
    embed.add_argument("--clip-seconds", type=float,
                       help="cut or zero-pad every file to this length (default: each file at its own length)")
    embed.add_argument("--batch-size", type=int, default=8, help="chunks of 10.24 s per forward pass")
    embed.add_argument("--frames", action="store_true", help="also write one embedding per 160 ms time patch")
    embed.add_argument("--layers", default="all", help="blocks: all, last, mean (averaged) or indices like 0,5,11")
    export = commands.add_parser("export", help="write a SavedModel or ONNX file for serving (frontend inside)")
    export.add_argument("source", help="AudioClassifier preset directory, .keras file, backbone preset or checkpoint")
    export.add_argument("path", help="the SavedModel directory or .onnx file to write")
    export.add_argument("--format", choices=("saved_model", "onnx"), default="saved_model")
    export.add_argument("--time-frames", type=int,
                        help="frames a backbone's embedder cuts or pads clips to (default: one chunk, 1024)")
    commands.add_parser("info", help="versions and the Keras backend in use")
    hear = commands.add_parser("hear-validate", help="run hearvalidator on keras_bat.hear (safe import order)")
    hear.add_argument("-m", "--model", default="", help="model_file_path for keras_bat.hear.load_model")
    hear.add_argument("-d", "--device", help="device for the validator, e.g. cpu or cuda")
    return parser


# What a user's mistake raises from keras-bat's own checks: the message says it all.
USER_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError)


def run(argv=None):
    """The `keras-bat` command: `main` with harmless framework notices
    filtered out of standard error (`keras_bat.runtime.filtered_stderr`), and
    a user's mistake reported in one line with exit status 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("KERAS_BAT_DEBUG", "0") not in ("", "0")
    argv = [argument for argument in argv if argument != "--debug"]  # accepted anywhere on the line
    with filtered_stderr():
        try:
            return main(argv)
        except USER_ERRORS as error:
            if debug or not raised_by_keras_bat(error):
                raise
            message = " ".join(str(error).split())
            print(f"keras-bat: error: {message} (--debug shows the traceback)", file=sys.stderr)
            return 2


def raised_by_keras_bat(error):
    """Whether `error` was raised by keras-bat's own code (its checks of paths,
    settings and checkpoints), not deeper inside a library."""
    frames = traceback.extract_tb(error.__traceback__)
    package = os.path.dirname(os.path.abspath(__file__))
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(package + os.sep)


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.backend:
        if "keras" in sys.modules:
            import keras

            if keras.backend.backend() != args.backend:
                raise ValueError(f"--backend {args.backend}: Keras is already running with the "
                                 f"{keras.backend.backend()} backend (use the keras-bat command, or set "
                                 "KERAS_BACKEND).")
        os.environ["KERAS_BACKEND"] = args.backend
    if importlib.util.find_spec("tensorflow") is not None:
        # Keras and the input pipeline import TensorFlow anyway: import it here,
        # quietly, and (under JAX or torch) off the GPUs.
        import_tensorflow()
    if args.command == "info":
        import keras

        import keras_bat

        print(f"keras-bat {keras_bat.__version__}\nKeras {keras.__version__}, backend {keras.backend.backend()}")
        return 0
    if args.command == "export":
        from keras_bat.export import export_file

        export_file(args.source, args.path, args.format, args.time_frames)
        print(f"wrote {args.path}")
        return 0
    if args.command == "hear-validate":
        return _hear_validate(args.model, args.device)
    if args.command == "embed":
        from keras_bat.workflows.embed import run_embed

        result = run_embed(args.folder, args.output, args.backbone, args.weights, args.checkpoint_key,
                           args.clip_seconds, args.batch_size, args.frames, args.layers, args.encoder)
        print(json.dumps(result, indent=2))
        return 0
    from keras_bat.workflows.config import load_config

    overrides = list(args.set)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if args.command == "finetune":
        overrides.append("train.finetune=true")
    variant = args.variant
    if args.command == "finetune" and variant is None and args.config is not None:
        variant = "finetune"  # the recipe's finetuning settings; the demo config has no variants
    config = load_config(args.config, variant, overrides)
    if args.command == "demo":
        from keras_bat.workflows.demo import run_demo

        run_demo(config)
        return 0
    if args.command == "pretrain":
        from keras_bat.workflows.pretrain import run_pretrain

        result = run_pretrain(config)
    else:
        from keras_bat.workflows.probe import run_probe

        result = run_probe(config)
    summary = result.get("summary") or result.get("metrics") or {"backbone": result.get("backbone")}
    print(json.dumps(summary, indent=2))
    print(f"results: {config['output_dir']}/results.json")
    return 0


def _hear_validate(model, device):
    """hearvalidator's checks on `keras_bat.hear`, in this process, where
    Keras (and under torch, Triton) is imported before TensorFlow."""
    import keras

    import keras_bat.hear  # noqa: F401  (Keras first)

    if keras.backend.backend() not in ("torch", "tensorflow"):
        raise SystemExit("hearvalidator checks torch and TensorFlow models: run hear-validate with KERAS_BACKEND=torch "
                         "or tensorflow (under JAX, keras_bat.hear's functions return JAX arrays).")
    try:
        from hearvalidator.validate import ValidateModel
    except ImportError as error:
        raise SystemExit("hear-validate needs hearvalidator: pip install 'keras-bat[hear]'") from error
    ValidateModel("keras_bat.hear", model, device=device)()
    print("hearvalidator: keras_bat.hear looks good")
    return 0


if __name__ == "__main__":
    sys.exit(run())
