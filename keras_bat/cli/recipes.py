"""`keras-bat pretrain | probe | finetune | demo`: a recipe run, every setting checked before any work."""

import argparse
import json
import os
from pathlib import Path

from keras_bat.cli.common import HelpFormatter, import_tensorflow_if_installed, print_json
from keras_bat.errors import UsageError
from keras_bat.workflows.config import builtin_recipes

COMMANDS = {
    "pretrain": ("self-supervised pretraining of an encoder",
                 "Pretrains a BAT encoder by masked latent prediction (student encoder and decoder, EMA teacher,\n"
                 "inverse block masks, several views per clip) and writes it as a preset under the output folder.",
                 "keras-bat pretrain ssl --set data.root=/data/AudioSet train.batch_size=24"),
    "probe": ("train a probe on a frozen encoder and evaluate it",
              "Trains a head (CGP, linear, layer-mixed linear, Head2Toe, ProtoBin, VQT, ASR) on a frozen\n"
              "encoder, evaluates it, and writes results.json and the task preset (label names included)\n"
              "that keras-bat tag labels new recordings with.",
              "keras-bat probe my_sounds/ --backbone hf://lrauch/BAT-vit-b16-pretrainedAS2M\n"
              "  keras-bat probe esc50 --variant cgp --set data.root=/data/ESC-50 model.weights=bat.pt"),
    "finetune": ("finetune the whole encoder with a head",
                 "Trains the encoder and a head together (the recipe's finetune variant by default).",
                 "keras-bat finetune my_sounds/ --backbone bat_base_as2m\n"
                 "  keras-bat finetune as20k --set data.root=/data/AudioSet model.weights=bat.pt"),
    "demo": ("the laptop demo on generated sound events",
             "Generates a procedural sound-event dataset, pretrains a small BAT on it, probes it and its\n"
             "random initialisation with CGP and a linear probe, prints both rows and writes the probes\n"
             "as task presets (runs/demo/ by default).",
             "keras-bat demo --set pretrain.steps=480"),
}
OWN_DATA_COMMANDS = ("probe", "finetune")  # they take a folder or CSV of labelled recordings as the recipe


def add_parsers(commands):
    recipes = ", ".join(builtin_recipes())
    for name, (summary, description, example) in COMMANDS.items():
        command = commands.add_parser(name, help=summary, description=description, epilog=f"example:\n  {example}",
                                      formatter_class=HelpFormatter)
        command.add_argument("config", nargs="?", default=None,
                             help=f"a built-in recipe ({recipes}) or a YAML recipe file; "
                                  "the demo's embedded config when omitted"
                                  + ("; or your own labelled recordings: a folder of class sub-folders or a CSV "
                                     "of path,label (the own_data recipe)" if name in OWN_DATA_COMMANDS else ""))
        if name in OWN_DATA_COMMANDS:
            command.add_argument("--backbone", default=None,
                                 help="the encoder: a preset name (bat_base_as2m), a preset or release folder, or "
                                      "hf://owner/repo[/subfolder] (sets model.backbone, encoder read off it)")
            command.add_argument("--model", default=None, dest="task_model", help=argparse.SUPPRESS)
        command.add_argument("--variant", default=None,
                             help="a variant of the recipe (its head or finetuning settings, e.g. cgp, lp, h2t; "
                                  "finetune takes the recipe's finetune variant by default)")
        command.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                             help="settings over the recipe's, YAML values, e.g. train.steps=100 "
                                  "data.root=/data/esc50 (every setting is checked before the run starts)")
        command.add_argument("--output-dir", default=None,
                             help="folder for logs, backups, presets and results.json (default: runs/<name>)")


def take_loose_recipe(args, parser):
    """A recipe written after `--set`'s settings is the recipe."""
    loose = [item for item in args.set if "=" not in item]
    if loose and args.config is None and len(loose) == 1 and loose[0] == args.set[-1]:
        args.config = args.set.pop()
    elif loose:
        parser.error(f"--set takes KEY=VALUE settings; {loose[0]!r} is not one")


def run(args):
    config = run_config(args)
    import_tensorflow_if_installed()
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
    print_json(result.get("summary") or result.get("metrics") or {"backbone": result.get("backbone")})
    print(f"results: {config['output_dir']}/results.json")
    if result.get("preset"):
        print(f"task preset: {result['preset']} (label new recordings with: keras-bat tag FILES_OR_FOLDER "
              f"--model {result['preset']} --output labels.csv)")
    return 0


def run_config(args):
    """The run's config, every setting checked, and what it names checked to exist, before any work."""
    from keras_bat.data.datasets import dataset_reader
    from keras_bat.heads import get_head
    from keras_bat.models.encoders import get_encoder
    from keras_bat.workflows.config import load_config
    from keras_bat.workflows.run_folder import check_writable_folder

    if getattr(args, "task_model", None):
        raise UsageError(f"--model {args.task_model}: --model names a task preset (keras-bat tag and export); the "
                         f"encoder that {args.command} trains on is --backbone.")
    overrides = list(args.set)
    recipe = args.config
    if recipe is not None and (os.path.isdir(recipe) or recipe.lower().endswith(".csv")):
        if not os.path.exists(recipe):
            raise FileNotFoundError(f"{recipe}: no such CSV file of labelled recordings.")
        # Your own recordings: the own_data recipe on them, the run named after them.
        overrides = [f"data.root={json.dumps(recipe)}", f"name={json.dumps(Path(recipe).stem or 'own_data')}"] \
            + overrides
        recipe = "own_data"
    if getattr(args, "backbone", None):
        overrides += [f"model.backbone={json.dumps(args.backbone)}", "model.encoder=auto", "model.weights=null"]
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
