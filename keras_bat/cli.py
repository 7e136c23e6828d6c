"""The `keras-bat` commands, run once `keras_bat_cli` has parsed the command line.

A user's mistake found by keras-bat's own checks (paths, settings,
checkpoints, output folders) is reported in one line with exit status 2;
every other error keeps its traceback.
"""

import json
import os
import sys
import traceback
from pathlib import Path

from keras_bat.runtime import filtered_stderr, import_tensorflow
from keras_bat.workflows.run_folder import check_writable_folder

# What a user's mistake raises from keras-bat's own checks: the message says it all.
USER_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError,
               ConnectionError)


def run_parsed(args):
    """Runs the parsed command with harmless framework notices filtered out of
    standard error (`keras_bat.runtime.filtered_stderr`), and a user's mistake
    reported in one line with exit status 2."""
    with filtered_stderr():
        try:
            return execute(args)
        except USER_ERRORS as error:
            if args.debug or not raised_by_keras_bat(error):
                raise
            first, *rest = str(error).strip().split("\n")  # long messages: a summary line, then the details
            message = " ".join(first.split())
            print(f"keras-bat: error: {message} (--debug shows {'every detail and ' if rest else ''}the traceback)",
                  file=sys.stderr)
            return 2
        except Exception as error:
            from keras_bat.training.distribution import stop_after_lost_process

            if not args.debug:
                stop_after_lost_process(error)
            raise


def main(argv=None):
    """Parses `argv` and runs the command, errors raised as they are (for tests and scripts)."""
    from keras_bat_cli import parse

    return execute(parse(sys.argv[1:] if argv is None else list(argv)))


def raised_by_keras_bat(error):
    """Whether `error` was raised by keras-bat's own checks of paths, settings
    and checkpoints: in keras-bat's code, not deeper inside a library, and a
    ValueError by a `raise` statement there (one that a builtin raises in
    keras-bat's code, such as `int("x")` or an unpacking, is a bug)."""
    frames = traceback.extract_tb(error.__traceback__)
    package = os.path.dirname(os.path.abspath(__file__))
    if not frames or not os.path.abspath(frames[-1].filename).startswith(package + os.sep):
        return False
    return not isinstance(error, ValueError) or (frames[-1].line or "").startswith("raise")


def execute(args):
    import keras

    if args.backend and keras.backend.backend() != args.backend:
        raise ValueError(f"--backend {args.backend}: Keras is already running with the {keras.backend.backend()} "
                         "backend (use the keras-bat command, or set KERAS_BACKEND).")
    if args.command == "hear-validate":
        return _hear_validate(args.model, args.device)
    if args.command == "export":
        from keras_bat.export import export_file

        check_writable_folder(os.path.dirname(os.path.abspath(args.path)), "folder of the exported file")
        _import_tensorflow_if_installed()
        export_file(args.source, args.path, args.format, args.time_frames, args.quantize)
        print(f"wrote {args.path}")
        return 0
    if args.command == "embed":
        return _embed(args)
    if args.command == "tag":
        return _tag(args)
    config = _run_config(args)
    _import_tensorflow_if_installed()
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
    from keras_bat.training.distribution import is_writer

    if not is_writer():  # a run over several processes reports once, from process 0
        return 0
    summary = result.get("summary") or result.get("metrics") or {"backbone": result.get("backbone")}
    print(json.dumps(summary, indent=2))
    print(f"results: {config['output_dir']}/results.json")
    if result.get("preset"):
        print(f"task preset: {result['preset']} (label new recordings with: keras-bat tag FILES_OR_FOLDER "
              f"--model {result['preset']} --output labels.csv)")
    return 0


def _run_config(args):
    """The run's config, every setting checked, and what it names checked to exist, before any work."""
    from keras_bat.data.datasets import dataset_reader
    from keras_bat.heads import get_head
    from keras_bat.models.encoders import get_encoder
    from keras_bat.workflows.config import load_config

    overrides = list(args.set)
    recipe = args.config
    if recipe is not None and (os.path.isdir(recipe) or recipe.lower().endswith(".csv")):
        if not os.path.exists(recipe):
            raise FileNotFoundError(f"{recipe}: no such CSV file of labelled recordings.")
        # Your own recordings: the own_data recipe on them, the run named after them.
        overrides = [f"data.root={json.dumps(recipe)}", f"name={json.dumps(Path(recipe).stem or 'own_data')}"] \
            + overrides
        recipe = "own_data"
    if getattr(args, "model", None):
        overrides += [f"model.backbone={json.dumps(args.model)}", "model.encoder=auto", "model.weights=null"]
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if args.command == "finetune":
        overrides.append("train.finetune=true")
    variant = args.variant
    if args.command == "finetune" and variant is None and recipe is not None:
        variant = "finetune"  # the recipe's finetuning settings; the demo config has no variants
    config = load_config(recipe, variant, overrides)
    if config["model"]["encoder"] != "auto":
        get_encoder(config["model"]["encoder"])  # the registries name what they hold
    if args.command != "pretrain":
        get_head(config["head"]["type"])
    if config["data"]["dataset"] is not None:
        dataset_reader(config["data"]["dataset"])
    root = config["data"]["root"]
    if root is not None and not os.path.exists(root):
        raise FileNotFoundError(f"Setting data.root={root!r}: no such file or folder.")
    weights = config["model"]["weights"]
    if weights is not None and not os.path.exists(weights):
        raise FileNotFoundError(f"Setting model.weights={weights!r}: no such checkpoint file or folder.")
    check_writable_folder(config["output_dir"])
    return config


def _embed(args):
    from keras_bat.workflows.embed import run_embed, skipped_text

    if args.weights is not None and not os.path.exists(args.weights):
        raise FileNotFoundError(f"--weights {args.weights}: no such checkpoint file or folder.")
    _import_tensorflow_if_installed()
    result = run_embed(args.folder, args.output, args.backbone, args.weights, args.checkpoint_key,
                       args.clip_seconds, args.batch_size, args.frames, args.layers, args.encoder,
                       resume=True if args.resume else None, overwrite=args.overwrite)
    if result.get("already_complete"):
        print(f"{args.output} already holds this run, complete (--overwrite runs it again).", file=sys.stderr)
    if result["skipped"]:
        print(skipped_text(result["skipped"], args.output), file=sys.stderr)
    print(json.dumps({key: value for key, value in result.items() if key != "skipped"}, indent=2))
    return 0


def _tag(args):
    from keras_bat.workflows.tag import parse_thresholds, run_tag

    thresholds = parse_thresholds(args.threshold)
    for item in args.inputs:
        if not os.path.exists(item):
            raise FileNotFoundError(f"{item}: no such audio file or folder.")
    check_writable_folder(os.path.dirname(os.path.abspath(args.output)), "folder of the results file")
    _import_tensorflow_if_installed()
    summary = run_tag(args.inputs, args.model, args.output, args.top_k, args.events, thresholds,
                      args.median_filter, args.batch_size, args.overwrite)
    print(json.dumps(summary, indent=2))
    return 0


def _import_tensorflow_if_installed():
    import importlib.util

    if importlib.util.find_spec("tensorflow") is not None:
        # Keras and the input pipeline import TensorFlow anyway: import it here,
        # quietly, and (under JAX or torch) off the GPUs.
        import_tensorflow()


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

