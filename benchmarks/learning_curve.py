"""Probe accuracy against pretraining steps, beside the random initialisation.

For each seed: one pretraining run (the demo's recipe unless `--set` says
otherwise) exports its encoder (`pretrain.export`) after each of `--steps`
(step 0 is the random initialisation of the same run); every export is probed
with CGP, the linear probe and the layer-mixed linear probe, and the first and
last exports are also finetuned, in full and with LoRA (all with the demo's probe settings). Writes
`learning_curve.json` (every run, and mean / std over seeds) and
`learning_curve.png` in `--output`. Finished runs are kept: run again to
resume or to add seeds.

    python benchmarks/learning_curve.py --seeds 0 1 2 --steps 0 720 1440 2160 2880 --every 240
"""

import argparse
import copy
import json
import sys
from pathlib import Path

PROBES = {"CGP": {"head": {"type": "cgp"}},
          "linear": {"head": {"type": "linear", "use_norm": True, "dropout": 0.0}},
          "layer-mixed linear": {"head": {"type": "lcgp", "use_norm": True, "dropout": 0.0}},
          "finetuning": {"head": {"type": "linear", "use_norm": True, "dropout": 0.0},
                         "train": {"finetune": True, "lr": 1e-3, "feature_cache": "off"}},
          # rank-8 factors on every attention projection, the rest of the encoder frozen; finetuning's settings
          "LoRA finetuning": {"head": {"type": "linear", "use_norm": True, "dropout": 0.0},
                              "train": {"finetune": True, "lora_rank": 8, "lr": 1e-3, "feature_cache": "off"}}}
FINETUNING = {name for name, settings in PROBES.items() if settings.get("train", {}).get("finetune")}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 720, 1440, 2160, 2880],
                        help="pretraining steps at which the encoder is probed (multiples of --every)")
    parser.add_argument("--every", type=int, default=240, help="pretraining steps per epoch")
    parser.add_argument("--probes", nargs="+", default=list(PROBES), choices=list(PROBES))
    parser.add_argument("--pretrain-clips", type=int, default=0,
                        help="pretrain on this many further unlabelled clips instead of the probes' training clips")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides of the demo config for every run, e.g. pretrain.lr=5e-4")
    parser.add_argument("--output", default="benchmarks/results/learning_curve")
    return parser.parse_args(argv)


def run_seed(args, seed, output):
    """`{probe: {step: accuracy}}` of one seed; finished runs are read back."""
    from keras_bat.workflows.config import load_config, merge
    from keras_bat.workflows.pretrain import run_pretrain
    from keras_bat.workflows.probe import run_probe

    last = max(args.steps)
    base = load_config(None, overrides=args.set + [f"seed={seed}"])
    base["data"]["root"] = base["data"]["root"] or str(output / "data")  # one data set for every seed
    if args.pretrain_clips:  # written after the labelled splits, which stay as they are
        base["data"]["options"]["splits"] = {**base["data"]["options"]["splits"], "unlabelled": args.pretrain_clips}
    pretrain_dir = output / f"seed{seed}" / "pretrain"
    pretrain_config = merge(base, {"output_dir": str(pretrain_dir), "pretrain": {
        "steps": last, "steps_per_epoch": args.every, "snapshot_steps": sorted(set(args.steps)),
        "ema_warmup_steps": max(base["pretrain"]["ema_warmup_steps"], last)}})
    if args.pretrain_clips:
        pretrain_config["data"]["train_split"] = "unlabelled"
    if not (pretrain_dir / "results.json").exists():
        run_pretrain(pretrain_config)
    pretrain = json.loads((pretrain_dir / "results.json").read_text())
    accuracies = {}
    for name in args.probes:
        steps = [min(args.steps), last] if name in FINETUNING else sorted(set(args.steps))
        for step in steps:
            run_dir = output / f"seed{seed}" / f"{name.replace(' ', '_')}_step{step}"
            if not (run_dir / "results.json").exists():
                config = merge(copy.deepcopy(base), PROBES[name])
                config["model"]["backbone"] = pretrain["snapshots"][str(step)]
                config["output_dir"] = str(run_dir)
                config["train"]["cache_dir"] = str(output / f"seed{seed}" / f"feature_cache_step{step}")
                print(f"seed {seed}: {name} on the encoder after {step} pretraining steps")
                run_probe(config)
            accuracies.setdefault(name, {})[step] = json.loads((run_dir / "results.json").read_text())[
                "metrics"]["accuracy"]
    return {"accuracy": accuracies, "pretraining_loss": pretrain["history"]["loss"],
            "pretraining_seconds": pretrain["wall_seconds"]}


def summarize(runs):
    """`{probe: {step: {mean, std, values}}}` over seeds."""
    import numpy as np

    summary = {}
    for run in runs.values():
        for name, by_step in run["accuracy"].items():
            for step, value in by_step.items():
                summary.setdefault(name, {}).setdefault(int(step), []).append(value)
    return {name: {step: {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": v}
                   for step, v in sorted(by_step.items())} for name, by_step in summary.items()}


def plot(summary, path, title):
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2))
    for (name, by_step), color in zip(summary.items(), ("C0", "C1", "C2", "C3", "C4")):
        steps = sorted(by_step)
        means = np.array([by_step[s]["mean"] for s in steps])
        stds = np.array([by_step[s]["std"] for s in steps])
        style = "o-" if len(steps) > 2 else "s--"  # finetuning: first and last encoder only
        axis.plot(steps, means, style, color=color, label=name)
        axis.fill_between(steps, means - stds, means + stds, color=color, alpha=0.15)
        axis.axhline(by_step[steps[0]]["mean"], color=color, linestyle=":", linewidth=1)
    axis.set_xlabel("pretraining steps (0 = random initialisation; dotted: its accuracy)")
    axis.set_ylabel("test accuracy (mean ± std over seeds)")
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv=None):
    args = parse_args(argv)
    if any(step % args.every for step in args.steps):
        sys.exit(f"--steps must be multiples of --every ({args.every})")
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    runs = {seed: run_seed(args, seed, output) for seed in args.seeds}
    summary = summarize(runs)
    result = {"seeds": args.seeds, "steps": args.steps, "overrides": args.set, "pretrain_clips": args.pretrain_clips,
              "runs": runs, "summary": summary}
    (output / "learning_curve.json").write_text(json.dumps(result, indent=2))
    print(f"\n{'probe':<20} " + " ".join(f"{f'step {s}':>14}" for s in sorted(set(args.steps))))
    for name, by_step in summary.items():
        cells = [f"{by_step[s]['mean']:.3f} ± {by_step[s]['std']:.3f}" if s in by_step else "" for s in
                 sorted(set(args.steps))]
        print(f"{name:<20} " + " ".join(f"{c:>14}" for c in cells))
    title = f"demo data, {len(args.seeds)} seed{'s' * (len(args.seeds) > 1)}"
    plot(summary, output / "learning_curve.png", title + (f"; {' '.join(args.set)}" if args.set else ""))
    print(f"\n{output / 'learning_curve.json'}\n{output / 'learning_curve.png'}")
    return result


if __name__ == "__main__":
    from keras_bat.runtime import filtered_stderr

    with filtered_stderr():
        main()
