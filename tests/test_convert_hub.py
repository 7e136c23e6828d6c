"""Presets and official releases by Hub URI (`hf://`), through the real `huggingface_hub` client
against a Hub stand-in on 127.0.0.1 (tests/hub_server.py): download, the cache reused offline with
the server stopped, a wrong repository, a truncated file, a release of another encoder family."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from helpers import in_one_backend_pass, require_module
from hub_server import HubServer, official_file
from keras_bat.models import BATBackbone, BEATsBackbone, EncoderModel
from keras_bat.models.presets import backbone_from_source, resolve

# Official releases name parameters under a prefix of their own wrapper (trust_remote_code models).
PREFIX = "audio_model.encoder."
BAT = {"dim": 128, "depth": 2, "num_heads": 2, "chunk_time_patches": 16}  # heads: the width // 64, as ViTs
BEATS = {"dim": 128, "depth": 2, "num_heads": 2, "ffn_dim": 256, "embed_dim": 48, "conv_pos": 16, "conv_pos_groups": 4}


@pytest.fixture(scope="module")
def releases():
    require_module("huggingface_hub")
    keras.utils.set_random_seed(3)
    bat, beats = BATBackbone(**BAT), BEATsBackbone(**BEATS)
    transformers_config = json.dumps({"architectures": ["BATModel"], "model_type": "bat", "auto_map": {}}).encode()
    bat_file = official_file(bat, PREFIX)
    return {"models": {"bat": bat, "beats": beats}, "repositories": {
        "lab/bat-release": {"model.safetensors": bat_file, "config.json": transformers_config},
        "lab/beats-release": {"model.safetensors": official_file(beats, "beats.")},
        "lab/truncated": {"model.safetensors": bat_file[:len(bat_file) // 2]},
        "lab/empty": {},
    }}


@pytest.fixture
def hub(releases, tmp_path, monkeypatch):
    """The stand-in Hub, and huggingface_hub pointed at it with an empty cache: the constants that
    HF_ENDPOINT and HF_HUB_CACHE set when huggingface_hub is imported (another test of this process
    may have imported it already; the offline test sets the real variables in new processes)."""
    from huggingface_hub import constants

    with HubServer(releases["repositories"]) as server:
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            server.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield server


def features(model, seed=0):
    spectrogram = np.random.default_rng(seed).normal(size=(2, 256, 128)).astype("float32")
    return {k: keras.ops.convert_to_numpy(v) for k, v in model(spectrogram).items()}


def assert_same_features(loaded, original):
    for name, value in features(original).items():
        np.testing.assert_allclose(features(loaded)[name], value, rtol=1e-5, atol=1e-5)


def test_an_official_release_loads_by_uri_with_its_architecture_read_off_the_weights(hub, releases):
    bat = BATBackbone.from_preset("hf://lab/bat-release")
    assert {key: bat.get_config()[key] for key in BAT} == BAT and bat.use_gate
    assert_same_features(bat, releases["models"]["bat"])
    # Every caller that takes a model: the encoder is found among the registered ones.
    beats = backbone_from_source("hf://lab/beats-release")
    assert type(beats) is BEATsBackbone and {key: beats.get_config()[key] for key in BEATS} == BEATS
    assert_same_features(beats, releases["models"]["beats"])


def test_the_base_class_returns_the_family_every_source_holds(hub, releases, tmp_path):
    """`EncoderModel.from_preset` resolves any source once and returns its family's class."""
    folder = tmp_path / "beats_preset"
    releases["models"]["beats"].save_to_preset(str(folder))
    expected = {"hf://lab/bat-release": ("release", BATBackbone, "bat"),
                "hf://lab/beats-release": ("release", BEATsBackbone, "beats"),
                str(folder): ("preset", BEATsBackbone, "beats"), "bat_small": ("builtin", BATBackbone, "bat")}
    for source, (kind, backbone_class, encoder) in expected.items():
        found = resolve(source)
        assert (found.kind, found.backbone_class, found.encoder) == (kind, backbone_class, encoder), source
        model = EncoderModel.from_preset(source, load_weights=kind != "builtin")
        assert type(model) is backbone_class, source
    assert_same_features(EncoderModel.from_preset(str(folder)), releases["models"]["beats"])
    assert_same_features(EncoderModel.from_preset("hf://lab/bat-release"), releases["models"]["bat"])
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"not read")
    assert resolve(str(checkpoint)).kind == "checkpoint"
    with pytest.raises(ValueError, match="checkpoint, not an encoder preset"):
        EncoderModel.from_preset(str(checkpoint))
    with pytest.raises(FileNotFoundError, match="neither a preset name"):
        resolve(str(tmp_path / "missing"))


def test_a_keras_bat_preset_in_a_subfolder_loads_by_uri(hub, releases, tmp_path):
    folder = tmp_path / "preset"
    releases["models"]["bat"].save_to_preset(str(folder))
    hub.repositories["lab/presets"] = {f"tiny/{p.name}": p.read_bytes() for p in folder.iterdir()}
    assert_same_features(BATBackbone.from_preset("hf://lab/presets/tiny"), releases["models"]["bat"])


@pytest.mark.long
@in_one_backend_pass("torch", "the Hugging Face cache's offline use")  # loading by URI: the tests above
def test_the_cache_serves_offline_once_the_hub_is_gone(releases, tmp_path):
    """Real environment variables, in a new process: download once, then offline with the server stopped."""
    script = ("import sys, numpy as np; from keras_bat.models import BATBackbone; "
              "m = BATBackbone.from_preset('hf://lab/bat-release'); "
              "print(float(np.abs(m.get_weights()[0]).sum()))")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    with HubServer(releases["repositories"]) as server:
        online = subprocess.run([sys.executable, "-c", script], env={**env, "HF_ENDPOINT": server.url},
                                capture_output=True, text=True, timeout=300)
    assert online.returncode == 0, online.stderr[-2000:]
    offline = subprocess.run([sys.executable, "-c", script], env={**env, "HF_ENDPOINT": server.url,
                                                                  "HF_HUB_OFFLINE": "1"},
                             capture_output=True, text=True, timeout=300)
    assert offline.returncode == 0, offline.stderr[-2000:]
    assert offline.stdout.split()[-1] == online.stdout.split()[-1]
    # Offline with nothing cached: one error naming the URI and the cache folder.
    empty = subprocess.run([sys.executable, "-c", script], env={**env, "HF_HOME": str(tmp_path / "empty"),
                                                                "HF_HUB_OFFLINE": "1"},
                           capture_output=True, text=True, timeout=300)
    assert empty.returncode != 0
    assert "hf://lab/bat-release is not in the Hugging Face cache" in empty.stderr
    assert str(tmp_path / "empty") in empty.stderr and "HF_HUB_OFFLINE is set" in empty.stderr


def test_bad_sources_name_the_problem(hub):
    with pytest.raises(ValueError, match="has no repository 'lab/nothing-here'"):
        BATBackbone.from_preset("hf://lab/nothing-here")
    with pytest.raises(ValueError, match="Could not read the safetensors file"):
        BATBackbone.from_preset("hf://lab/truncated")
    with pytest.raises(ValueError, match="holds no BATBackbone weights"):
        BATBackbone.from_preset("hf://lab/beats-release")
    with pytest.raises(ValueError, match="not a Hub URI"):
        BATBackbone.from_preset("hf://just-a-name")
    with pytest.raises(ValueError, match="hf://lab/empty: the repository 'lab/empty' holds no files"):
        BATBackbone.from_preset("hf://lab/empty")


def test_the_published_release_is_a_preset_that_carries_weights():
    preset = BATBackbone.presets["bat_base_as2m"]
    assert preset["weights"] == "hf://lrauch/BAT-vit-b16-pretrainedAS2M"
    assert BATBackbone.presets["bat_base"]["weights"] is None
    # Without weights it is the architecture, built offline.
    assert BATBackbone.from_preset("bat_base_as2m", load_weights=False).dim == 768


def test_a_task_preset_uploaded_to_the_hub_loads_back_by_uri(hub, tmp_path, monkeypatch):
    from keras_bat import upload_preset
    from keras_bat.heads import CGP
    from keras_bat.layers import LogMelSpectrogram
    from keras_bat.models import AudioClassifier

    monkeypatch.setenv("HF_TOKEN", "hf_stand_in_token")
    model = AudioClassifier(BATBackbone(**BAT), CGP(2, 4), frontend=LogMelSpectrogram(time_frames=64),
                            label_names=["bird", "frog"])
    waveforms = np.random.default_rng(4).normal(size=(2, 8000)).astype("float32") * 0.1
    model.save_to_preset(tmp_path / "frogs")
    url = upload_preset("hf://me/frog-probe/v1", tmp_path / "frogs")
    assert url.startswith(hub.url) and "POST /api/models/me/frog-probe/commit/main" in hub.requests
    assert sorted(hub.repositories["me/frog-probe"]) == sorted(f"v1/{name}" for name in os.listdir(tmp_path / "frogs"))
    restored = AudioClassifier.from_preset("hf://me/frog-probe/v1")
    assert restored.label_names == ["bird", "frog"]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(waveforms)),
                               keras.ops.convert_to_numpy(model(waveforms)), rtol=1e-5, atol=1e-5)
    assert_same_features(BATBackbone.from_preset("hf://me/frog-probe/v1"), model.backbone)
    with pytest.raises(ValueError, match="is not a preset folder"):
        upload_preset("hf://me/frog-probe", tmp_path)
    # A preset whose weights are of another size than its config: one error naming the shapes, in
    # either layout (Keras weights, or the official names of earlier presets).
    files = {name[len("v1/"):]: data for name, data in hub.repositories["me/frog-probe"].items()}
    BATBackbone(**{**BAT, "dim": 64}).save_to_preset(tmp_path / "wide")
    wide = (tmp_path / "wide" / "model.weights.h5").read_bytes()
    hub.repositories["me/mismatch"] = {**files, "model.weights.h5": wide}
    with pytest.raises(ValueError, match=r"model.weights.h5 does not fit the BATBackbone its config.json builds: "
                                         r"\S+ is \(\d+, 128\) in the model and \(\d+, 64\) in the file "
                                         r"\(\d+ layers do not fit\)"):
        AudioClassifier.from_preset("hf://me/mismatch")
    earlier = {name: data for name, data in files.items() if name != "model.weights.h5"}
    wide = official_file(BATBackbone(**{**BAT, "dim": 64}))
    hub.repositories["me/mismatch-earlier"] = {**earlier, "model.safetensors": wide}
    with pytest.raises(ValueError, match=r"shape.*\(128,\).*\(64,\)|\(64,\).*\(128,\)"):
        AudioClassifier.from_preset("hf://me/mismatch-earlier")


def test_a_probe_on_a_release_asks_the_hub_once_and_reads_its_weights_once(hub, releases, monkeypatch):
    """`model.encoder=auto` names the family from the weights' names and shapes (the safetensors
    header), then builds the backbone: one download, one read of the tensors."""
    import safetensors.numpy

    from keras_bat.workflows.builders import build_backbone

    reads = []
    load_file = safetensors.numpy.load_file
    monkeypatch.setattr(safetensors.numpy, "load_file", lambda *args, **kwargs: reads.append(args) or
                        load_file(*args, **kwargs))
    model = {"encoder": "auto", "backbone": "hf://lab/beats-release", "weights": None, "checkpoint_key": None,
             "drop_path": 0.0, "dtype": None}
    backbone = build_backbone(model)
    assert type(backbone) is BEATsBackbone and len(reads) == 1, reads
    assert_same_features(backbone, releases["models"]["beats"])
    asked = [path for path in hub.requests if path == "/api/models/lab/beats-release/revision/main"]
    assert len(asked) == 1, hub.requests
    build_backbone(model)  # the same source again in this process: the Hub is not asked again
    assert hub.requests.count("/api/models/lab/beats-release/revision/main") == 1, hub.requests
