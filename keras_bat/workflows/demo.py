"""The demo: pretrain a small BAT on the procedural sound-event dataset, then
probe it with CGP and with a linear probe, and print a results table."""

import copy
import json
import time
from pathlib import Path

from keras_bat.data.synthetic import SOUND_CLASSES
from keras_bat.workflows.config import merge
from keras_bat.workflows.pretrain import run_pretrain
from keras_bat.workflows.probe import run_probe

PROBES = {"CGP": {"head": {"type": "cgp"}},
          "linear probe": {"head": {"type": "linear", "use_norm": True, "dropout": 0.0}}}


def run_demo(config):
    """Runs the three steps under `config["output_dir"]` and returns a summary
    (also written to `summary.json`)."""
    start = time.time()
    output_dir = Path(config["output_dir"])
    config = copy.deepcopy(config)
    config["data"]["root"] = config["data"]["root"] or str(output_dir / "synthetic_data")

    splits = config["data"]["options"].get("splits") or {}
    print(f"[1/3] pretraining a BAT ({_describe(config['model']['backbone'])}) on procedurally generated clips "
          f"({', '.join(f'{n} {name}' for name, n in splits.items())})")
    pretrain = run_pretrain({**config, "output_dir": str(output_dir / "pretrain")})
    rows = []
    for step, (name, changes) in enumerate(PROBES.items(), start=2):
        print(f"[{step}/3] {name} on the frozen pretrained encoder")
        probe_config = merge(config, changes)
        probe_config["model"]["backbone"] = pretrain["backbone"]
        probe_config["output_dir"] = str(output_dir / f"probe_{probe_config['head']['type']}")
        results = run_probe(probe_config)
        rows.append((name, results["metrics"]["accuracy"], results.get("layer_weights_plot")))
    summary = {
        "chance_accuracy": 1.0 / len(SOUND_CLASSES),
        "pretraining": {"first_loss": pretrain["history"]["loss"][0], "last_loss": pretrain["history"]["loss"][-1],
                        "seconds": pretrain["wall_seconds"]},
        "probes": {name: {"accuracy": accuracy, "layer_weights_plot": plot} for name, accuracy, plot in rows},
        "wall_seconds": round(time.time() - start, 1),
    }
    with open(output_dir / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    print(format_summary(summary))
    return summary


def format_summary(summary):
    pre = summary["pretraining"]
    lines = ["", f"pretraining loss {pre['first_loss']:.4f} -> {pre['last_loss']:.4f} ({pre['seconds']:.0f} s)", "",
             f"{'probe':<14} {'test accuracy':>13}   chance {summary['chance_accuracy']:.3f}",
             "-" * 40]
    for name, result in summary["probes"].items():
        lines.append(f"{name:<14} {result['accuracy']:>13.3f}")
    plots = [r["layer_weights_plot"] for r in summary["probes"].values() if r["layer_weights_plot"]]
    if plots:
        lines.append(f"\nCGP layer gate plot: {plots[0]}")
    lines.append(f"total {summary['wall_seconds']:.0f} s")
    return "\n".join(lines)


def _describe(backbone):
    if isinstance(backbone, dict):
        return ", ".join(f"{k} {v}" for k, v in backbone.items())
    return str(backbone)
