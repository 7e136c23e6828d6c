"""The `keras-bat` console script: the command line, read before anything heavy is imported.

Importing the `keras_bat` package imports Keras, which fixes its backend and
takes seconds: this module, outside the package, parses the command line,
answers `--help` and `info` from package metadata alone, checks the backend
name, sets `KERAS_BACKEND`, and only then hands the parsed command to
`keras_bat.cli`.

    keras-bat demo
    keras-bat probe esc50 --variant cgp --set data.root=/data/ESC-50
    keras-bat finetune as20k --set data.root=/data/AudioSet model.weights=bat.pt
    keras-bat pretrain ssl --set data.root=/data/AudioSet
    keras-bat embed my_audio/ --output embeddings/ --weights bat.pt --frames
    keras-bat tag my_audio/ --model runs/my_sounds/task_preset --output labels.csv
    keras-bat export runs/demo/probe_cgp_pretrained/preset probe.onnx --format onnx
    keras-bat hear-validate -m my_preset/
    keras-bat --backend jax info

A mistake in what you asked for (a missing file or folder, a bad setting, a
checkpoint that does not fit, an output folder that holds another run) ends
with one line and exit status 2; `--debug` (or KERAS_BAT_DEBUG=1) shows the
traceback. Ctrl-C ends with one line and exit status 130.
"""

import argparse
import importlib.metadata
import importlib.util
import json
import os
import sys
from pathlib import Path

BACKENDS = ("tensorflow", "jax", "torch")


DESCRIPTION = """BAT (Better Audio Transformer) and Convex Gated Probing in Keras 3: pretrain, probe, finetune,
embed and export audio encoders on TensorFlow, JAX or PyTorch."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written, and each argument's default shown where it has one."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, [], False, argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """Usage mistakes in one line, naming the command's --help."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help shows the usage)\n")


def builtin_recipes():
    """Names of the recipes shipped in `keras_bat/workflows/configs`, found without importing keras_bat."""
    spec = importlib.util.find_spec("keras_bat")
    folder = Path(spec.origin).parent / "workflows" / "configs" if spec and spec.origin else None
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder and folder.is_dir() else []


def positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {'whole ' if kind is int else ''}number > 0, "
                                             f"received {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a number > 0, received {text!r}")
        return value
    parse.__name__ = kind.__name__
    return parse


RUN_COMMANDS = {
    "pretrain": ("self-supervised pretraining of an encoder",
                 "Pretrains a BAT encoder by masked latent prediction (student encoder and decoder, EMA teacher,\n"
                 "inverse block masks, several views per clip) and writes it as a preset under the output folder.",
                 "keras-bat pretrain ssl --set data.root=/data/AudioSet train.batch_size=24"),
    "probe": ("train a probe on a frozen encoder and evaluate it",
              "Trains a head (CGP, linear, layer-mixed linear, Head2Toe, ProtoBin, VQT, ASR) on a frozen\n"
              "encoder, evaluates it, and writes results.json and the task preset (label names included)\n"
              "that keras-bat tag labels new recordings with.",
              "keras-bat probe my_sounds/ --model hf://lrauch/BAT-vit-b16-pretrainedAS2M\n"
              "  keras-bat probe esc50 --variant cgp --set data.root=/data/ESC-50 model.weights=bat.pt"),
    "finetune": ("finetune the whole encoder with a head",
                 "Trains the encoder and a head together (the recipe's finetune variant by default).",
                 "keras-bat finetune my_sounds/ --model bat_base_as2m\n"
                 "  keras-bat finetune as20k --set data.root=/data/AudioSet model.weights=bat.pt"),
    "demo": ("the laptop demo on generated sound events",
             "Generates a procedural sound-event dataset, pretrains a small BAT on it, probes it and its\n"
             "random initialisation with CGP and a linear probe, prints both rows and writes the probes\n"
             "as task presets (runs/demo/ by default).",
             "keras-bat demo --set pretrain.steps=480"),
}


OWN_DATA_COMMANDS = ("probe", "finetune")


def make_parser():
    parser = Parser(prog="keras-bat", description=DESCRIPTION, formatter_class=HelpFormatter,
                    epilog="\n\n".join(__doc__.split("\n\n")[2:]))
    parser.add_argument("--backend", choices=BACKENDS,
                        help="Keras backend (default: KERAS_BACKEND, else Keras' own default)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of every error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    recipes = ", ".join(builtin_recipes())
    for name, (summary, description, example) in RUN_COMMANDS.items():
        command = commands.add_parser(name, help=summary, description=description, epilog=f"example:\n  {example}",
                                      formatter_class=HelpFormatter)
        command.add_argument("config", nargs="?", default=None,
                             help=f"a built-in recipe ({recipes}) or a YAML recipe file; "
                                  "the demo's embedded config when omitted"
                                  + ("; or your own labelled recordings: a folder of class sub-folders or a CSV "
                                     "of path,label (the own_data recipe)" if name in OWN_DATA_COMMANDS else ""))
        if name in OWN_DATA_COMMANDS:
            command.add_argument("--model", default=None,
                                 help="the encoder: a preset name (bat_base_as2m), a preset or release folder, or "
                                      "hf://owner/repo[/subfolder] (sets model.backbone, encoder read off it)")
        command.add_argument("--variant", default=None,
                             help="a variant of the recipe (its head or finetuning settings, e.g. cgp, lp, h2t; "
                                  "finetune takes the recipe's finetune variant by default)")
        command.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                             help="settings over the recipe's, YAML values, e.g. train.steps=100 "
                                  "data.root=/data/esc50 (every setting is checked before the run starts)")
        command.add_argument("--output-dir", default=None,
                             help="folder for logs, backups, presets and results.json (default: runs/<name>)")
    embed = commands.add_parser(
        "embed", help="write the embeddings of a folder of recordings", formatter_class=HelpFormatter,
        description="Embeds every audio file under FOLDER (wav, flac, ogg, mp3, ...), each at its own length,\n"
                    "streamed window by window in constant memory. Writes clip_embeddings.npy, optionally\n"
                    "frame_embeddings.npy, manifest.csv (each file's rows and status), skipped.tsv and run.json.\n"
                    "An interrupted run resumes from its last finished file when run again.",
        epilog="example:\n  keras-bat embed recordings/ --output embeddings/ --weights bat.pt --frames")
    embed.add_argument("folder", help="folder of audio files (searched recursively)")
    embed.add_argument("--output", default="embeddings", help="output folder")
    embed.add_argument("--encoder", default="bat", choices=["bat", "eat", "sslam", "beats"], help="encoder family")
    embed.add_argument("--backbone", default="bat_base", help="preset name, preset folder or hf://owner/repo")
    embed.add_argument("--weights", default=None, help="official checkpoint (.pt / .safetensors / folder)")
    embed.add_argument("--checkpoint-key", default=None, help="e.g. ema_encoder for the pretraining's teacher")
    embed.add_argument("--clip-seconds", type=positive(float), default=None,
                       help="cut or zero-pad every file to this length (default: each file at its own length)")
    embed.add_argument("--batch-size", type=positive(int), default=8,
                       help="chunks of 10.24 s per forward pass (memory grows with it, not with the files)")
    embed.add_argument("--frames", action="store_true", help="also write one embedding per 160 ms time patch")
    embed.add_argument("--layers", default="all", help="blocks: all, last, mean (averaged) or indices like 0,5,11")
    state = embed.add_mutually_exclusive_group()
    state.add_argument("--resume", action="store_true",
                       help="continue a partial run in --output (also the default when it holds one)")
    state.add_argument("--overwrite", action="store_true",
                       help="replace whatever run --output holds and start again")
    tag = commands.add_parser(
        "tag", help="label recordings (top-k labels, sound events) with a task preset", formatter_class=HelpFormatter,
        description="Labels every audio file given (files, and folders searched recursively), each at its own\n"
                    "length, streamed in constant memory: the top-k labels with their scores and, with a frame-level\n"
                    "head and --events, the sound events (onset, offset, label, score) after per-class thresholds\n"
                    "and median filtering. A file that cannot be read gets a 'failed' row with the reason and the\n"
                    "run goes on; each file's rows are on disk before the next starts, and an interrupted run\n"
                    "continues from its last finished file when run again.",
        epilog="examples:\n  keras-bat tag recordings/ --model runs/my_sounds/task_preset --output labels.csv\n"
               "  keras-bat tag night.flac --model hf://me/bird-events --events --threshold 0.3 --output events.json")
    tag.add_argument("inputs", nargs="+", help="audio files and folders")
    tag.add_argument("--model", required=True,
                     help="task preset: a folder written by probe / finetune (<run>/preset), a .keras file or "
                          "hf://owner/repo[/subfolder]")
    tag.add_argument("--output", required=True, help="results file, .csv or .json")
    tag.add_argument("--top-k", type=positive(int), default=5, help="labels per recording")
    tag.add_argument("--events", action="store_true", help="also write sound events (frame-level heads)")
    tag.add_argument("--threshold", default="0.5",
                     help="event threshold: one probability, or per class as label=value pairs separated by "
                          "commas (others 0.5)")
    tag.add_argument("--median-filter", type=float, default=0.5,
                     help="seconds of the median filter over each class's frame probabilities (0: none)")
    tag.add_argument("--batch-size", type=positive(int), default=4,
                     help="time chunks of 10.24 s per forward pass (default 4: on a CPU as fast as 8, and its "
                          "peak memory lower and steadier)")
    tag.add_argument("--overwrite", action="store_true", help="replace an existing results file")
    export = commands.add_parser(
        "export", help="write a SavedModel, ONNX or LiteRT file for serving (frontend inside)",
        formatter_class=HelpFormatter,
        description="Exports an AudioClassifier preset (logits and label names) or a backbone (clip and frame\n"
                    "embeddings) as a model that takes 16 kHz waveforms and needs nothing of keras-bat to run.",
        epilog="examples:\n  keras-bat export runs/demo/probe_cgp_pretrained/preset probe_savedmodel\n"
               "  keras-bat export runs/demo/probe_cgp_pretrained/preset probe.tflite --format litert --quantize int8")
    export.add_argument("source", help="AudioClassifier preset folder, .keras file, backbone preset or checkpoint")
    export.add_argument("path", help="the SavedModel folder, .onnx or .tflite file to write")
    export.add_argument("--format", choices=("saved_model", "onnx", "litert"), default="saved_model",
                        help="file format (litert: a .tflite file for the LiteRT interpreter)")
    export.add_argument("--quantize", choices=("int8",), default=None,
                        help="litert only: int8 weights (dynamic-range quantization; about a quarter of the size)")
    export.add_argument("--time-frames", type=positive(int), default=None,
                        help="frames (100 a second) clips are cut or zero-padded to: required for an encoder, whose "
                             "clips are then encoded in chunks; a task preset keeps its own by default")
    commands.add_parser("info", help="versions of keras-bat, Keras, the backends, Triton and CUDA",
                        description="Prints versions and the Keras backend, without importing them.")
    hear = commands.add_parser("hear-validate", help="run hearvalidator on keras_bat.hear (safe import order)",
                               formatter_class=HelpFormatter)
    hear.add_argument("-m", "--model", default="", help="model_file_path for keras_bat.hear.load_model")
    hear.add_argument("-d", "--device", default=None, help="device for the validator, e.g. cpu or cuda")
    return parser


def parse(argv):
    """The parsed command line; a recipe written after `--set`'s settings is taken as the recipe."""
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.command in RUN_COMMANDS:
        loose = [item for item in args.set if "=" not in item]
        if loose and args.config is None and len(loose) == 1 and loose[0] == args.set[-1]:
            args.config = args.set.pop()
        elif loose:
            parser.error(f"--set takes KEY=VALUE settings; {loose[0]!r} is not one")
    return args


def backend_in_use(args):
    return args.backend or os.environ.get("KERAS_BACKEND") or _keras_config_backend() or "tensorflow"


def _keras_config_backend():
    path = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "keras.json"
    try:
        return json.loads(path.read_text()).get("backend")
    except (OSError, ValueError):
        return None


def info(args):
    """Versions, read from package metadata: nothing is imported."""
    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    lines = [f"keras-bat {version('keras-bat')}", f"Keras {version('keras')}, backend {backend_in_use(args)}"]
    for name in ("tensorflow", "jax", "jaxlib", "torch", "triton", "numpy"):
        lines.append(f"{name:<11}{version(name) or 'not installed'}")
    cuda = [f"{name} {version(name)}" for name in ("nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime-cu13",
                                                   "nvidia-cuda-runtime", "nvidia-cudnn-cu12") if version(name)]
    lines.append(f"{'CUDA':<11}{', '.join(cuda) if cuda else 'no CUDA runtime package'}")
    print("\n".join(lines))
    return 0


def fail(message, status=2):
    print(f"keras-bat: error: {message}", file=sys.stderr)
    return status


def run(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("KERAS_BAT_DEBUG", "0") not in ("", "0")
    args = parse([argument for argument in argv if argument != "--debug"])  # --debug accepted anywhere
    args.debug = debug
    if args.command == "info":
        return info(args)
    backend = args.backend or os.environ.get("KERAS_BACKEND")
    if backend is not None and backend not in BACKENDS:
        return fail(f"KERAS_BACKEND={backend!r} is not a Keras backend: use one of {', '.join(BACKENDS)}.")
    if backend:
        os.environ["KERAS_BACKEND"] = backend
    try:
        from keras_bat.cli import run_parsed

        return run_parsed(args)
    except KeyboardInterrupt as interrupt:
        if debug:
            raise
        return fail(str(interrupt) or "interrupted.", 130)


if __name__ == "__main__":
    sys.exit(run())
