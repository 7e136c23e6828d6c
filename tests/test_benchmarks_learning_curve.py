"""benchmarks/learning_curve.py on tiny settings: every probe at every step,
statistics over seeds, finished runs read back."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from helpers import in_one_backend_pass, preset_weights
from test_workflows import TINY

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "learning_curve.py"


def load_script():
    spec = importlib.util.spec_from_file_location("learning_curve", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The pretraining and probing the script drives are tested on every backend (test_workflows.py). Under
# torch its 12 tiny runs take 19 s; under TensorFlow 122 s, most of it tracing each new model's steps.
@in_one_backend_pass("torch", "the learning-curve script's bookkeeping")
def test_learning_curve_on_tiny_settings(tmp_path):
    learning_curve = load_script()
    args = ["--seeds", "0", "1", "--steps", "0", "2", "4", "--every", "2", "--probes", "CGP", "finetuning",
            "--output", str(tmp_path), "--set", *TINY]
    result = learning_curve.main(args)

    written = json.loads((tmp_path / "learning_curve.json").read_text())
    assert (tmp_path / "learning_curve.png").stat().st_size > 0
    assert written["summary"]["CGP"].keys() == {"0", "2", "4"}
    assert written["summary"]["finetuning"].keys() == {"0", "4"}  # finetuning: first and last encoder
    for name, by_step in result["summary"].items():
        for step, stats in by_step.items():
            values = [result["runs"][seed]["accuracy"][name][step] for seed in (0, 1)]
            assert stats["values"] == values and stats["mean"] == pytest.approx(np.mean(values))
            assert stats["std"] == pytest.approx(np.std(values))
    # Snapshots of one run differ from step to step; each seed has its own initialisation.
    weights = {(seed, step): preset_weights(tmp_path / f"seed{seed}" / "pretrain" / "snapshots" / f"step_{step}")
               for seed in (0, 1) for step in (0, 2, 4)}
    contents = {b"".join(arrays[name].tobytes() for name in sorted(arrays)) for arrays in weights.values()}
    assert len(contents) == 6

    # A second call reads the finished runs back instead of running them again.
    mtimes = {p: p.stat().st_mtime for p in tmp_path.glob("seed*/*/results.json")}
    again = learning_curve.main(args)
    assert again["summary"] == result["summary"]
    assert {p: p.stat().st_mtime for p in tmp_path.glob("seed*/*/results.json")} == mtimes


def test_steps_must_be_multiples_of_an_epoch(tmp_path):
    with pytest.raises(SystemExit, match="multiples of --every"):
        load_script().main(["--steps", "0", "3", "--every", "2", "--output", str(tmp_path)])
