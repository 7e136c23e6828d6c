"""`keras-bat embed`: the embeddings of a folder of recordings, streamed in constant memory."""

import os
import sys

from keras_bat.cli.common import HelpFormatter, import_tensorflow_if_installed, library_defaults, positive, print_json

DEFAULTS = library_defaults("keras_bat.workflows.embed", "run_embed")


def add_parser(commands):
    embed = commands.add_parser(
        "embed", help="write the embeddings of a folder of recordings", formatter_class=HelpFormatter,
        description="Embeds every audio file under FOLDER (wav, flac, ogg, mp3, ...), each at its own length,\n"
                    "streamed window by window in constant memory. Writes clip_embeddings.npy, optionally\n"
                    "frame_embeddings.npy, manifest.csv (each file's rows and status), skipped.tsv and run.json.\n"
                    "An interrupted run resumes from its last finished file when run again.",
        epilog="example:\n  keras-bat embed recordings/ --output embeddings/ --weights bat.pt --frames")
    embed.add_argument("folder", help="folder of audio files (searched recursively)")
    embed.add_argument("--output", default="embeddings", help="output folder")
    embed.add_argument("--backbone", default=DEFAULTS["backbone"],
                       help="the encoder: a preset name, a preset or release folder, or hf://owner/repo[/subfolder]")
    embed.add_argument("--encoder", default=DEFAULTS["encoder"],
                       help="encoder family of --weights, an official checkpoint (bat, eat, sslam, beats, or one "
                            "registered with keras_bat.models.register_encoder)")
    embed.add_argument("--weights", default=None, help="official checkpoint (.pt / .safetensors / folder)")
    embed.add_argument("--checkpoint-key", default=None, help="e.g. ema_encoder for the pretraining's teacher")
    embed.add_argument("--clip-seconds", type=positive(float), default=DEFAULTS["clip_seconds"],
                       help="cut or zero-pad every file to this length (default: each file at its own length)")
    embed.add_argument("--batch-size", type=positive(int), default=DEFAULTS["batch_size"],
                       help="chunks of 10.24 s per forward pass (memory grows with it, not with the files)")
    embed.add_argument("--frames", action="store_true", help="also write one embedding per 160 ms time patch")
    embed.add_argument("--layers", default=DEFAULTS["layers"],
                       help="blocks: all, last, mean (averaged) or indices like 0,5,11")
    state = embed.add_mutually_exclusive_group()
    state.add_argument("--resume", action="store_true",
                       help="continue a partial run in --output (also the default when it holds one)")
    state.add_argument("--overwrite", action="store_true",
                       help="replace whatever run --output holds and start again")


def run(args):
    if args.weights is not None and not os.path.exists(args.weights):
        raise FileNotFoundError(f"--weights {args.weights}: no such checkpoint file or folder.")
    import_tensorflow_if_installed()
    from keras_bat.workflows.embed import run_embed, skipped_text

    result = run_embed(args.folder, args.output, args.backbone, args.weights, args.checkpoint_key,
                       args.clip_seconds, args.batch_size, args.frames, args.layers, args.encoder,
                       resume=True if args.resume else None, overwrite=args.overwrite)
    if result.get("already_complete"):
        print(f"{args.output} already holds this run, complete (--overwrite runs it again).", file=sys.stderr)
    if result["skipped"]:
        print(skipped_text(result["skipped"], args.output), file=sys.stderr)
    print_json({key: value for key, value in result.items() if key != "skipped"})
    return 0
