"""`keras-bat tag`: labels and sound events of recordings, with a task preset."""

import os

from keras_bat.cli.common import HelpFormatter, import_tensorflow_if_installed, library_defaults, positive, print_json

DEFAULTS = library_defaults("keras_bat.workflows.tag", "run_tag")


def add_parser(commands):
    tag = commands.add_parser(
        "tag", help="label recordings (top-k labels, sound events) with a task preset", formatter_class=HelpFormatter,
        description="Labels every audio file given (files, and folders searched recursively), each at its own\n"
                    "length, streamed in constant memory: the top-k labels with their scores and, with a frame-level\n"
                    "head and --events, the sound events (onset, offset, label, score) after per-class thresholds\n"
                    "and median filtering. A file that cannot be read gets a 'failed' row with the reason and the\n"
                    "run goes on; each file's rows are on disk before the next starts, and an interrupted run\n"
                    "continues from its last finished file when run again.",
        epilog="examples:\n  keras-bat tag recordings/ --model runs/my_sounds/preset --output labels.csv\n"
               "  keras-bat tag night.flac --model hf://me/bird-events --events --threshold 0.3 --output events.json")
    tag.add_argument("inputs", nargs="+", help="audio files and folders")
    tag.add_argument("--model", required=True,
                     help="task preset: a folder written by probe / finetune (<run>/preset), a .keras file or "
                          "hf://owner/repo[/subfolder]")
    tag.add_argument("--output", required=True, help="results file, .csv or .json")
    tag.add_argument("--top-k", type=positive(int), default=DEFAULTS["top_k"], help="labels per recording")
    tag.add_argument("--events", action="store_true", help="also write sound events (frame-level heads)")
    tag.add_argument("--threshold", default=str(DEFAULTS["thresholds"]),
                     help=f"event threshold: one probability, or per class as label=value pairs separated by "
                          f"commas (others {DEFAULTS['thresholds']})")
    tag.add_argument("--median-filter", type=float, default=DEFAULTS["median_filter"],
                     help="seconds of the median filter over each class's frame probabilities (0: none)")
    tag.add_argument("--batch-size", type=positive(int), default=DEFAULTS["batch_size"],
                     help="time chunks of 10.24 s per forward pass (on a CPU 4 is as fast as 8, and its peak memory "
                          "lower and steadier)")
    tag.add_argument("--overwrite", action="store_true", help="replace an existing results file")


def run(args):
    from keras_bat.workflows.run_folder import check_writable_folder

    for item in args.inputs:
        if not os.path.exists(item):
            raise FileNotFoundError(f"{item}: no such audio file or folder.")
    check_writable_folder(os.path.dirname(os.path.abspath(args.output)), "folder of the results file")
    import_tensorflow_if_installed()
    from keras_bat.workflows.tag import parse_thresholds, run_tag

    summary = run_tag(args.inputs, args.model, args.output, args.top_k, args.events, parse_thresholds(args.threshold),
                      args.median_filter, args.batch_size, args.overwrite)
    print_json(summary)
    return 0
