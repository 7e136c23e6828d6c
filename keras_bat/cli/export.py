"""`keras-bat export`: a SavedModel, ONNX or LiteRT file for serving, the frontend inside."""

import os

from keras_bat.cli.common import HelpFormatter, import_tensorflow_if_installed, library_defaults, positive

DEFAULTS = library_defaults("keras_bat.export", "export_file")


def add_parser(commands):
    export = commands.add_parser(
        "export", help="write a SavedModel, ONNX or LiteRT file for serving (frontend inside), or the official weights",
        formatter_class=HelpFormatter,
        description="Exports an AudioClassifier preset (logits and label names) or a backbone (clip and frame\n"
                    "embeddings) as a model that takes 16 kHz waveforms and needs nothing of keras-bat to run.",
        epilog="examples:\n  keras-bat export runs/demo/probe_cgp_pretrained/preset probe_savedmodel\n"
               "  keras-bat export runs/demo/probe_cgp_pretrained/preset probe.tflite --format litert --quantize int8\n"
               "  keras-bat export runs/demo/probe_cgp_pretrained/preset bat.safetensors --format official")
    export.add_argument("source", help="AudioClassifier preset folder, .keras file, backbone preset or checkpoint")
    export.add_argument("path", help="the SavedModel folder, .onnx, .tflite or .safetensors file to write")
    export.add_argument("--format", choices=("saved_model", "onnx", "litert", "official"),
                        default=DEFAULTS["format"],
                        help="file format (litert: a .tflite file for the LiteRT interpreter; official: the "
                             "encoder's weights under the official names, a .safetensors file for the authors' "
                             "PyTorch code)")
    export.add_argument("--quantize", choices=("int8",), default=DEFAULTS["quantize"],
                        help="litert only: int8 weights (dynamic-range quantization; about a quarter of the size)")
    export.add_argument("--time-frames", type=positive(int), default=DEFAULTS["time_frames"],
                        help="frames (100 a second) clips are cut or zero-padded to: required for an encoder, whose "
                             "clips are then encoded in chunks; a task preset keeps its own by default")


def run(args):
    from keras_bat.workflows.run_folder import check_writable_folder

    check_writable_folder(os.path.dirname(os.path.abspath(args.path)), "folder of the exported file")
    import_tensorflow_if_installed()
    from keras_bat.export import export_file

    export_file(args.source, args.path, args.format, args.time_frames, args.quantize)
    print(f"wrote {args.path}")
    return 0
