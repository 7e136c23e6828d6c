import pathlib
import runpy

import numpy as np

DEMO = pathlib.Path(__file__).resolve().parents[1] / "recipes" / "encode_demo.py"


def test_encode_demo_writes_features_and_figure(tmp_path, capsys):
    demo = runpy.run_path(str(DEMO))
    features = demo["main"](["--preset", "bat_small", "--depth", "2", "--seconds", "2.0",
                             "--output-dir", str(tmp_path)])
    assert features["patch_tokens"].shape == (1, 2, 12, 8, 384)  # 2 s -> 192 frames -> 12 patches
    saved = np.load(tmp_path / "features.npz")
    np.testing.assert_array_equal(saved["cls_tokens"], features["cls_tokens"])
    assert (tmp_path / "features.png").stat().st_size > 10_000
    assert "time novelty" in capsys.readouterr().out
