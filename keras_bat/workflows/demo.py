"""The demo: pretrain a small BAT on the procedural sound-event dataset, then
probe it, and the same run's random initialisation, with CGP and with a linear
probe, and print a results table."""

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
    """Runs the steps under `config["output_dir"]` and returns a summary (also
    written to `summary.json`): pretraining, then each probe on the pretrained
    encoder and on the same run's random initialisation (same seeds and
    settings), the baseline that shows what pretraining adds."""
    start = time.time()
    output_dir = Path(config["output_dir"]).resolve()
    config = copy.deepcopy(config)
    config["data"]["root"] = config["data"]["root"] or str(output_dir / "synthetic_data")
    config["pretrain"]["snapshot_steps"] = sorted(set(config["pretrain"]["snapshot_steps"]) | {0})
    encoders = {"random initialisation": 0, f"pretrained ({config['pretrain']['steps']} steps)": "backbone"}
    total = 1 + len(PROBES) * len(encoders)
    splits = config["data"]["options"].get("splits") or {}
    print(f"[1/{total}] pretraining a BAT ({_describe(config['model']['backbone'])}) on procedurally generated clips "
          f"({', '.join(f'{n} {name}' for name, n in splits.items())})")
    pretrain = run_pretrain({**config, "output_dir": str(output_dir / "pretrain")})
    backbones = {name: pretrain["backbone"] if which == "backbone" else pretrain["snapshots"][which]
                 for name, which in encoders.items()}
    results = {}
    step = 1
    for encoder, backbone in backbones.items():
        for name, changes in PROBES.items():
            step += 1
            print(f"[{step}/{total}] {name} on the frozen encoder: {encoder}")
            probe_config = merge(config, changes)
            probe_config["model"]["backbone"] = backbone
            kind = "random" if backbone != pretrain["backbone"] else "pretrained"
            probe_config["output_dir"] = str(output_dir / f"probe_{probe_config['head']['type']}_{kind}")
            run = run_probe(probe_config)
            results.setdefault(encoder, {})[name] = {"accuracy": run["metrics"]["accuracy"],
                                                     "layer_weights_plot": run.get("layer_weights_plot"),
                                                     "preset": run.get("preset")}
    summary = {
        "chance_accuracy": 1.0 / len(SOUND_CLASSES),
        "pretraining": {"steps": config["pretrain"]["steps"], "first_loss": pretrain["history"]["loss"][0],
                        "last_loss": pretrain["history"]["loss"][-1], "seconds": pretrain["wall_seconds"]},
        "encoders": results,
        "wall_seconds": round(time.time() - start, 1),
    }
    with open(output_dir / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    print(format_summary(summary))
    return summary


def format_summary(summary):
    pre = summary["pretraining"]
    probes = list(PROBES)
    lines = ["", f"pretraining loss {pre['first_loss']:.4f} -> {pre['last_loss']:.4f} ({pre['seconds']:.0f} s)", "",
             f"test accuracy (chance {summary['chance_accuracy']:.3f})",
             f"{'encoder':<28}" + "".join(f"{name:>14}" for name in probes), "-" * (28 + 14 * len(probes))]
    for encoder, by_probe in summary["encoders"].items():
        lines.append(f"{encoder:<28}" + "".join(f"{by_probe[name]['accuracy']:>14.3f}" for name in probes))
    random, pretrained = summary["encoders"].values()
    behind = [name for name in probes if pretrained[name]["accuracy"] <= random[name]["accuracy"]]
    if behind:
        lines.append(f"\nAfter {pre['steps']} steps the pretrained encoder does not beat its random initialisation "
                     f"under: {', '.join(behind)}. Pretraining pays after longer runs: see the learning curve "
                     f"in the README (python benchmarks/learning_curve.py).")
    plots = [r["layer_weights_plot"] for by_probe in summary["encoders"].values() for r in by_probe.values()
             if r["layer_weights_plot"]]
    if plots:
        lines.append(f"\nCGP layer gate plot (pretrained encoder): {plots[-1]}")
    presets = [r["preset"] for by_probe in summary["encoders"].values() for r in by_probe.values() if r.get("preset")]
    if presets:
        lines.append(f"task presets (label names included; keras-bat export PRESET model.onnx --format onnx): "
                     f"{presets[-1]}, ...")
    lines.append(f"total {summary['wall_seconds']:.0f} s")
    return "\n".join(lines)


def _describe(backbone):
    if isinstance(backbone, dict):
        return ", ".join(f"{k} {v}" for k, v in backbone.items())
    return str(backbone)
