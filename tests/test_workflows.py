"""Configs, the `keras-bat` command and the workflows end to end on tiny settings."""

import csv
import glob
import json
import re

import keras
import numpy as np
import pytest
import yaml

from audio_files import tone, write
from helpers import in_one_backend_pass, parity_path, preset_weights, require_module, shared_path
from keras_bat.cli import main
from keras_bat.workflows.config import DEFAULTS, builtin_recipes, load_config, parse_overrides, read_recipe

TINY = ["model.backbone={dim: 32, depth: 2, num_heads: 2}", "model.time_frames=64", "data.clip_seconds=0.64",
        "data.options={splits: {train: 16, test: 8}, clip_seconds: 0.64}", "train.batch_size=4", "train.steps=4",
        "train.steps_per_epoch=2", "train.warmup_steps=1", "train.verbose=0", "head.num_prototypes=8",
        "pretrain.batch_size=4", "pretrain.steps=2", "pretrain.steps_per_epoch=1", "pretrain.warmup_steps=1",
        "pretrain.decoder_depth=1", "pretrain.decoder_heads=2", "pretrain.verbose=0", "data.num_workers=2"]


def test_config_merging_and_errors(tmp_path):
    config = load_config(None, overrides=["train.lr=0.01", "head.type=linear"])
    assert config["train"]["lr"] == 0.01 and config["head"]["type"] == "linear"
    assert config["name"] == "demo" and config["output_dir"] == "runs/demo"
    assert config["train"]["min_lr"] == DEFAULTS["train"]["min_lr"]
    assert parse_overrides(["a.b=[1, 2]", "c=null", "d.e.f=yes"]) == {"a": {"b": [1, 2]}, "c": None,
                                                                      "d": {"e": {"f": True}}}
    with pytest.raises(ValueError, match="Unknown config key 'train.learning_rate'"):
        load_config(None, overrides=["train.learning_rate=1"])
    with pytest.raises(ValueError, match="section"):
        load_config(None, overrides=["train=3"])
    with pytest.raises(ValueError, match="section.key=value"):
        load_config(None, overrides=["train.lr"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("base: {name: r, train: {steps: 7}}\nvariants: {a: {train: {lr: 0.5}}}\n")
    assert load_config(recipe, "a")["train"] == {**DEFAULTS["train"], "steps": 7, "lr": 0.5}
    with pytest.raises(ValueError, match="available: \\['a', 'lora'\\]"):  # lora: every recipe's
        load_config(recipe, "b")


def test_builtin_recipes_ship_with_the_package():
    assert builtin_recipes() == ["as20k", "dcase2016_task2", "esc50", "hsn", "librispeech", "own_data", "scv2", "ssl"]
    with pytest.raises(FileNotFoundError, match="no built-in recipe of that name; built-in recipes: as20k"):
        load_config("esc_50", "cgp")


def recipe_variants(name):
    return sorted(read_recipe(name).get("variants") or {})


@pytest.mark.parametrize("name", builtin_recipes())
def test_every_recipe_variant_loads(name):
    variants = recipe_variants(name)
    assert variants
    for variant in variants:
        config = load_config(name, variant)
        assert config["data"]["dataset"] and config["output_dir"].endswith(variant)


HEAD_TYPES = {"cgp": "cgp", "linear_cgp": "lcgp", "linear": "linear", "h2t": "h2t", "protobin": "pb", "vqt": "vqt",
              "asr": "asr"}
RECIPE_OF_TABLE = {"as20k": "as20k", "sed": "dcase2016_task2", "esc50": "esc50", "hsn": "hsn", "ls": "librispeech",
                   "scv2": "scv2"}
# The paper's setting -> (config section, key, the heads that take it (None: all)).
PAPER_KEYS = {
    "time_frame_size": ("model", "time_frames", None), "path_dropout_rate": ("model", "drop_path", None),
    "num_prototypes": ("head", "num_prototypes", {"cgp", "pb"}), "num_vqt": ("head", "num_query_tokens", {"vqt"}),
    "head_norm": ("head", "use_norm", {"linear", "lcgp", "h2t", "vqt", "asr"}),
    "head_dropout": ("head", "dropout", None),
    "lasso_weight": ("head", "lasso_weight", {"h2t"}), "finetune": ("train", "finetune", None),
    "train_batch_size": ("train", "batch_size", None), "optimization_steps": ("train", "steps", None),
    "lr": ("train", "lr", None), "min_lr": ("train", "min_lr", None), "lr_layer_decay": ("train", "layer_decay", None),
    "lr_warmup_steps": ("train", "warmup_steps", None), "weight_decay": ("train", "weight_decay", None),
    "adam_beta2": ("train", "beta2", None), "use_asymmetric_loss": ("train", "asymmetric_loss", None),
    "mixup_chance": ("augment", "mixup_chance", None), "color_noise_chance": ("augment", "color_noise_chance", None),
    "freq_mask_param": ("augment", "freq_mask_param", None), "time_mask_param": ("augment", "time_mask_param", None),
    "use_time_roll": ("augment", "time_roll", None),
}


def paper_tables():
    """`{column: {setting: value}}` of every table in the paper's settings (`../shared/PAPER_SETTINGS.md`)."""
    path = shared_path("PAPER_SETTINGS.md")
    columns, tables = [], {}
    for line in path.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or cells[0].startswith("---"):
            continue
        if cells[0] == "setting":
            columns = cells[1:]
            tables.update({column: {} for column in columns})
            continue
        for column, value in zip(columns, cells[1:]):
            tables[column][cells[0]] = _table_value(value)
    return tables


def _table_value(text):
    """None, a bool, a number (`1e-06` included, which YAML 1.1 leaves a string) or the text."""
    constants = {"None": None, "True": True, "False": False}
    if text in constants:
        return constants[text]
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def test_recipes_carry_the_papers_settings():
    """Every built-in recipe variant against the authors' released configs, setting by setting."""
    checked = 0
    for column, settings in paper_tables().items():
        table, variant = column.rsplit("_", 1)
        recipe = RECIPE_OF_TABLE[table]
        config = load_config(recipe, "asr" if variant == "probe" else variant)
        head = HEAD_TYPES[settings["head"]]
        assert config["head"]["type"] == head, column
        for setting, value in settings.items():
            if setting not in PAPER_KEYS:
                continue
            section, key, heads = PAPER_KEYS[setting]
            if heads is not None and head not in heads:
                continue
            if section == "augment" and not settings.get("augment", False):
                value = DEFAULTS["augment"][key]  # no augmentation: the defaults, all off
            found = config[section][key]
            assert (found is None) if value is None else (found == pytest.approx(value)), \
                f"{column}: {setting}={value}, recipe {recipe}/{variant} has {section}.{key}={found}"
            checked += 1
        if settings.get("use_mixup"):
            assert config["augment"]["mixup_alpha"] == settings["mixup_beta"], column
        if settings.get("use_tf_mask"):
            assert config["augment"]["mask_repeats"] == settings["tf_mask_repeats"], column
        frame_task = settings.get("frame_wise_task", False)  # frame heads pool per time patch
        if "use_cls_in_head" in settings and head in ("cgp", "lcgp", "linear", "h2t") and not frame_task:
            assert config["head"]["pooling"] == ("cls" if settings["use_cls_in_head"] else "mean"), column
    assert checked > 500


def test_probe_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "probe"
    assert main(["probe", "--set", *TINY, f"output_dir={out}"]) == 0
    results = json.loads((out / "results.json").read_text())
    correct = results["metrics"]["accuracy"] * 8  # a fraction of the 8 evaluation clips
    assert 0 <= correct <= 8 and correct == pytest.approx(round(correct), abs=1e-6)
    assert results["train_clips"] == 16 and results["eval_clips"] == 8 and results["skipped_files"] == {}
    assert len(results["layer_weights"]) == 2 and abs(sum(results["layer_weights"]) - 1) < 1e-5
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {"loss", "val_loss", "skipped_files"} <= set(rows[0])
    assert (out / "layer_weights.png").stat().st_size > 1000
    assert (out / "checkpoint.weights.h5").exists() and (out / "config.yaml").exists()
    assert glob.glob(str(out / "tensorboard" / "*"))
    assert "accuracy" in capsys.readouterr().out


PEER_ENCODERS = {
    "bat": [],
    "eat": ["model.backbone={dim: 64, depth: 3, num_heads: 4}", "model.weights=eat_checkpoint.pt"],
    "sslam": ["model.backbone={dim: 64, depth: 3, num_heads: 4}", "model.weights=eat_checkpoint.pt",
              "model.fbank_statistics=esc50"],
    "beats": ["model.backbone={dim: 64, depth: 3, num_heads: 4, ffn_dim: 128, embed_dim: 48, conv_pos: 16, "
              "conv_pos_groups: 4}", "model.weights=beats_checkpoint.pt"],
}


@pytest.mark.parametrize("encoder", sorted(PEER_ENCODERS))
def test_cgp_probe_on_every_encoder(encoder, tmp_path):
    settings = PEER_ENCODERS[encoder]
    if any("weights=" in item for item in settings):
        require_module("torch")  # the official checkpoints are PyTorch files
        folder = parity_path("eat_checkpoint.pt", "peer").parent
        settings = [item.replace("weights=", f"weights={folder}/") for item in settings]
    out = tmp_path / encoder
    assert main(["probe", "--set", *TINY, f"model.encoder={encoder}", *settings, f"output_dir={out}"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["metrics"]["accuracy"] <= 1.0 and results["feature_cache"]
    assert len(results["layer_weights"]) == (2 if encoder == "bat" else 3)


BEATS_TINY = ["model.encoder=beats", "model.backbone={dim: 32, depth: 2, num_heads: 2, ffn_dim: 64, embed_dim: 16, "
              "conv_pos: 8, conv_pos_groups: 2}"]


@pytest.mark.parametrize("head", ["linear", "lcgp", "h2t", "pb", "vqt"])
def test_every_classification_head_probes_beats(head, tmp_path):
    # CGP on every encoder: above; ASR with BEATs: tests/test_models_audio_classifier.py.
    out = tmp_path / head
    assert main(["probe", "--set", *TINY, *BEATS_TINY, f"head.type={head}", "head.num_query_tokens=2",
                 f"output_dir={out}"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["metrics"]["accuracy"] <= 1.0 and results["feature_cache"] == (head != "vqt")


def test_finetune_and_embed_with_beats(tmp_path):
    out = tmp_path / "finetune"
    assert main(["probe", "--set", *TINY, *BEATS_TINY, "head.type=linear", "train.finetune=true",
                 f"output_dir={out}"]) == 0
    assert not json.loads((out / "results.json").read_text())["feature_cache"]
    preset = tmp_path / "beats_preset"
    from keras_bat.models import BEATsBackbone

    BEATsBackbone(dim=32, depth=2, num_heads=2, ffn_dim=64, embed_dim=16, conv_pos=8,
                  conv_pos_groups=2).save_to_preset(str(preset))
    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(2):
        write(audio / f"{i}.wav", tone(0.5, frequency=300 + 200 * i))
    assert main(["embed", str(audio), "--encoder", "beats", "--backbone", str(preset), "--clip-seconds", "0.64",
                 "--output", str(tmp_path / "embeddings")]) == 0
    assert np.load(tmp_path / "embeddings" / "clip_embeddings.npy").shape == (2, 2, 32)


def test_unknown_encoder_is_named(tmp_path):
    with pytest.raises(ValueError, match="Unknown encoder 'wav2vec'"):
        main(["probe", "--set", *TINY, "model.encoder=wav2vec", f"output_dir={tmp_path}"])


def test_event_detection_run_reports_event_f1(tmp_path):
    out = tmp_path / "sed"
    main(["probe", "--set", *TINY, "data.options={task: frame, splits: {train: 8, test: 4}, clip_seconds: 0.64}",
          "head.type=linear", f"output_dir={out}"])
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    assert {"frame_micro_mAP", "event_f1", "event_precision", "event_recall"} == set(metrics)
    precision, recall = metrics["event_precision"], metrics["event_recall"]
    assert 0.0 <= precision <= 1.0 and 0.0 <= recall <= 1.0 and 0.0 < metrics["frame_micro_mAP"] <= 1.0
    assert metrics["event_f1"] == pytest.approx(2 * precision * recall / (precision + recall) if precision + recall
                                                else 0.0)


def _capture_run_backbones(monkeypatch):
    """The backbones the probe runs build, as they were built."""
    import keras_bat.workflows.probe_plan as probe

    built, build = [], probe.build_run_backbone
    monkeypatch.setattr(probe, "build_run_backbone", lambda config: built.append(build(config)) or built[-1])
    return built


def test_pretrain_then_probe_the_exported_backbone(tmp_path, monkeypatch):
    from keras_bat.models import BATPretrainer

    out = tmp_path / "ssl"
    pretrainers, compile_pretrainer = [], BATPretrainer.compile

    def compile_and_record(self, *args, **kwargs):
        pretrainers.append(self)
        return compile_pretrainer(self, *args, **kwargs)

    monkeypatch.setattr(BATPretrainer, "compile", compile_and_record)
    settings = {"num_views": 3, "mask_ratio": 0.7, "ema_decay_start": 0.9, "ema_decay_end": 0.95,
                "ema_warmup_steps": 7}
    main(["pretrain", "--set", *TINY, f"output_dir={out}", *(f"pretrain.{k}={v}" for k, v in settings.items())])
    assert {name: getattr(pretrainers[0], name) for name in settings} == settings  # the recipe's settings reach it
    results = json.loads((out / "results.json").read_text())
    assert len(results["history"]["loss"]) == 2 and np.isfinite(results["history"]["loss"]).all()
    assert (out / "backbone" / "config.json").exists() and (out / "backbone" / "model.weights.h5").exists()
    built = _capture_run_backbones(monkeypatch)
    main(["probe", "--set", *TINY, f"model.backbone={out / 'backbone'}", f"output_dir={tmp_path / 'probe'}"])
    assert (tmp_path / "probe" / "results.json").exists()
    from keras_bat.models import BATBackbone

    exported = BATBackbone.from_preset(str(out / "backbone"))
    assert len(built) == 1 and len(built[0].weights) == len(exported.weights)
    for probed, pretrained in zip(built[0].weights, exported.weights):  # the probe ran the pretrained encoder
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(probed), keras.ops.convert_to_numpy(pretrained))


def test_esc50_cross_validation_summary(tmp_path):
    root = tmp_path / "ESC-50"
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for i in range(10):
        write(root / "audio" / f"{i}.wav", tone(0.64, frequency=300 + 500 * (i % 2)))
        rows.append(f"{i}.wav,{i % 5 + 1},{i % 2},{['low', 'high'][i % 2]},False,x,A")
    (root / "audio" / "broken.wav").write_text("not audio")  # fold 1: skipped, and said so
    rows.append("broken.wav,1,0,low,False,x,A")
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "esc"
    main(["probe", "esc50", "--variant", "lp", "--set", *TINY, f"data.root={root}",
          "data.folds=[1, 2]", "data.options={}", f"output_dir={out}"])
    results = json.loads((out / "results.json").read_text())
    assert len(results["folds"]) == 2 and results["folds"][1]["eval_clips"] == 2
    reason = "not a readable audio file"
    assert results["folds"][0]["eval_clips"] == 3 and results["folds"][0]["skipped_files"] == {reason: 1}
    assert (out / "fold1" / "skipped_files.txt").read_text() == f"{root / 'audio' / 'broken.wav'}\t{reason}\n"
    assert (out / "fold2" / "skipped_files.txt").read_text().count("broken.wav") == 1  # a training clip there
    summary = results["summary"]["accuracy"]
    assert summary["mean"] == pytest.approx(np.mean(summary["folds"]))
    # A rerun (e.g. after an interruption) keeps finished folds instead of training them again.
    (out / "fold1" / "fold_results.json").write_text(json.dumps({**results["folds"][0], "metrics": {"accuracy": 0.25}}))
    main(["probe", "esc50", "--variant", "lp", "--set", *TINY, f"data.root={root}",
          "data.folds=[1, 2]", "data.options={}", f"output_dir={out}"])
    rerun = json.loads((out / "results.json").read_text())
    assert rerun["summary"]["accuracy"]["folds"][0] == 0.25


def test_missing_dataset_root_is_named(tmp_path):
    with pytest.raises(ValueError, match="data.root"):
        main(["probe", "esc50", "--variant", "cgp", "--set", "data.root=null",
              f"output_dir={tmp_path}"])


def test_embed_command_skips_bad_files(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(3):
        write(folder / f"{i}.wav", tone(0.5 + i * 0.3))
    (folder / "broken.wav").write_text("not audio")
    preset = tmp_path / "preset"
    from keras_bat.models import BATBackbone

    BATBackbone(dim=32, depth=2, num_heads=2).save_to_preset(str(preset))
    output = tmp_path / "embeddings"
    main(["embed", str(folder), "--output", str(output), "--backbone", str(preset), "--clip-seconds", "0.64",
          "--frames"])
    with open(output / "manifest.csv") as f:
        manifest = list(csv.DictReader(f))
    assert [row["path"] for row in manifest] == [str(folder / f"{i}.wav") for i in range(3)] + [
        str(folder / "broken.wav")]
    assert [row["first_frame"] for row in manifest] == ["0", "4", "8", ""]
    assert [row["status"] for row in manifest] == ["ok", "ok", "ok", "failed"]
    assert np.load(output / "clip_embeddings.npy").shape == (3, 2, 32)
    assert np.load(output / "frame_embeddings.npy").shape == (12, 2, 32)  # 0.64 s: 4 patches a file
    skipped = (output / "skipped.tsv").read_text().splitlines()
    assert len(skipped) == 1 and "broken.wav" in skipped[0]


# The pretraining and probes the demo chains run on every backend in the tests above; CI runs the demo
# itself in full under TensorFlow (the README's command).
@pytest.mark.long
@in_one_backend_pass("torch", "the demo's bookkeeping")
def test_demo_on_tiny_settings(tmp_path, capsys):
    main(["demo", "--set", *TINY, f"output_dir={tmp_path / 'demo'}"])
    printed = capsys.readouterr().out
    assert re.search(r"^random initialisation +[0-9.]+ +[0-9.]+$", printed, re.M)
    assert re.search(r"^pretrained \(2 steps\) +[0-9.]+ +[0-9.]+$", printed, re.M) and "layer gate plot" in printed
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["chance_accuracy"] == 1 / 8
    assert set(summary["encoders"]) == {"random initialisation", "pretrained (2 steps)"}
    for by_probe in summary["encoders"].values():
        assert set(by_probe) == {"CGP", "linear probe"}
    # Each probe is a task preset with its label names, which keras-bat export reads.
    from keras_bat.data import SOUND_CLASSES
    from keras_bat.models import AudioClassifier

    assert "task presets (label names included" in printed
    for kind in ("random", "pretrained"):
        classifier = AudioClassifier.from_preset(tmp_path / "demo" / f"probe_cgp_{kind}" / "preset")
        assert classifier.label_names == list(SOUND_CLASSES) and classifier.frontend is not None
        assert tuple(classifier(np.zeros((1, 16000), "float32")).shape) == (1, len(SOUND_CLASSES))
    # The random row probes the same run's initial weights, not the pretrained ones.
    pretrain_dir = tmp_path / "demo" / "pretrain"
    random_weights, pretrained = (preset_weights(pretrain_dir / folder) for folder in ("snapshots/step_0", "backbone"))
    assert any(np.abs(random_weights[k] - pretrained[k]).max() > 0 for k in random_weights)


@pytest.mark.long
def test_bfloat16_runs_and_cached_probes(tmp_path, monkeypatch):
    out = tmp_path / "bf16"
    built = _capture_run_backbones(monkeypatch)
    main(["probe", "--set", *TINY, "model.dtype=mixed_bfloat16", "train.feature_cache=off", f"output_dir={out}"])
    results = json.loads((out / "results.json").read_text())
    assert not results["feature_cache"] and np.isfinite(results["history"]["loss"]).all()
    assert {block.compute_dtype for block in built[0].blocks} == {"bfloat16"}
    assert {v.dtype for v in built[0].weights} == {"float32"}  # mixed precision: float32 variables
    main(["pretrain", "--set", *TINY, "model.dtype=mixed_bfloat16", f"output_dir={tmp_path / 'ssl'}"])
    assert np.isfinite(json.loads((tmp_path / "ssl" / "results.json").read_text())["history"]["loss"]).all()
    # The default probe (frozen encoder, no augmentation) trains from the feature cache, reused by a rerun.
    cached = tmp_path / "cached"
    main(["probe", "--set", *TINY, f"output_dir={cached}"])
    assert json.loads((cached / "results.json").read_text())["feature_cache"]
    assert (cached / "feature_cache" / "train" / "cache.json").exists()
    with pytest.raises(ValueError, match="cannot serve this run: augmentations"):
        main(["probe", "--set", *TINY, "train.feature_cache=on", "augment.time_roll=true",
              f"output_dir={tmp_path / 'refused'}"])


@pytest.mark.parametrize("variant", [None, "lora"])
@pytest.mark.long
def test_finetune_command_trains_the_encoder(variant, tmp_path, monkeypatch, capsys):
    import keras_bat.workflows.probe_plan as probe

    initial, build = [], probe.build_run_backbone

    def build_and_remember(config):
        backbone = build(config)
        initial.append({v.path: np.array(keras.ops.convert_to_numpy(v)) for v in backbone.weights})
        trainable.update(v.path for v in backbone.trainable_weights)
        built.append(backbone)
        return backbone

    built, trainable = [], set()
    monkeypatch.setattr(probe, "build_run_backbone", build_and_remember)
    out = tmp_path / "finetune"
    chosen = ["--variant", variant] if variant else []
    assert main(["finetune", *chosen, "--set", *TINY, "head.type=linear", f"output_dir={out}"]) == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["train"]["finetune"] is True
    assert not json.loads((out / "results.json").read_text())["feature_cache"]
    backbone = built[0]
    moved = {v.path: np.abs(keras.ops.convert_to_numpy(v) - initial[0][v.path]).max()
             for v in backbone.weights if v.path in initial[0]}
    printed = capsys.readouterr().out
    if variant is None:
        assert len(trainable) > 10 and min(moved[path] for path in trainable) > 0  # every encoder weight trained
        assert "trainable parameters:" in printed and "LoRA" not in printed
        return
    # LoRA: the factors trained, every other encoder weight as it was
    assert config["train"]["lora_rank"] == 8 and backbone.lora_rank == 8
    assert max(moved.values()) == 0
    factors = [v for v in backbone.weights if v.path not in initial[0]]
    assert factors and all("lora_kernel" in v.path for v in factors)
    assert {v.path for v in backbone.trainable_weights} == {v.path for v in factors}
    assert min(np.abs(keras.ops.convert_to_numpy(v)).max() for v in factors if v.path.endswith("_b")) > 0
    count = sum(int(np.prod(v.shape)) for v in factors)
    assert f"encoder {count:,} (LoRA rank 8)" in printed
    # The task preset holds the merged encoder: it predicts as the trained model did.
    from keras_bat.models import AudioClassifier

    preset = AudioClassifier.from_preset(out / "preset")
    assert preset.backbone.lora_rank is None
    x = np.random.default_rng(0).uniform(-0.5, 0.5, size=(1, 16000)).astype("float32")
    spectrogram = preset.frontend(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(preset.backbone(spectrogram)["cls_tokens"]),
                               keras.ops.convert_to_numpy(backbone(spectrogram)["cls_tokens"]), atol=1e-5)


def test_embed_loads_official_weights(tmp_path):
    from keras_bat.models.bat import load_official_weights
    from keras_bat.data import load_audio
    from keras_bat.models import BATBackbone

    checkpoint = parity_path("encoder_weights.safetensors")
    preset = tmp_path / "tiny"
    BATBackbone(dim=64, depth=3, num_heads=4).save_to_preset(str(preset))  # the fixtures' architecture
    audio = tmp_path / "audio"
    audio.mkdir()
    path = write(audio / "a.wav", tone(1.28, frequency=440.0))
    output = tmp_path / "embeddings"
    assert main(["embed", str(audio), "--backbone", str(preset), "--weights", str(checkpoint),
                 "--output", str(output)]) == 0
    official = load_official_weights(BATBackbone(dim=64, depth=3, num_heads=4), checkpoint)
    spectrogram = official.make_frontend(time_frames=128)(load_audio(path)[None])
    expected = keras.ops.convert_to_numpy(official(spectrogram)["cls_tokens"])
    np.testing.assert_allclose(np.load(output / "clip_embeddings.npy"), expected, atol=1e-5)
