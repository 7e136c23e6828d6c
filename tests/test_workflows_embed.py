"""Streamed whole-recording embeddings equal the backbone run on the whole clip at once."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from audio_files import tone, write
from helpers import in_one_backend_pass, to_numpy

from keras_bat.cli import main
from keras_bat.data.audio import load_audio, load_window
from keras_bat.layers.frontend import fit_frames
from keras_bat.layers.patching import whole_patch_frames
from keras_bat.models import BATBackbone, BEATsBackbone
from keras_bat.models import RecordingStream
from keras_bat.workflows.embed import parse_layers

# Chunks of 4 time patches (64 frames, 0.64 s), so that a few seconds make several chunks.
BACKBONES = {
    "bat": lambda: BATBackbone(dim=32, depth=2, num_heads=2, chunk_time_patches=4),
    # With a padding mask the shorter last chunk is padded to a power of two of patches and masked.
    "bat_masked": lambda: BATBackbone(dim=32, depth=2, num_heads=2, chunk_time_patches=4, use_padding_mask=True),
    "beats": lambda: BEATsBackbone(dim=32, depth=2, num_heads=2, ffn_dim=64, embed_dim=16, conv_pos=8,
                                   conv_pos_groups=2, chunk_time_patches=4),
}


def recording(path, seconds=3.05, seed=0):
    rng = np.random.default_rng(seed)
    samples = tone(seconds, frequency=350.0) + 0.05 * rng.normal(size=int(seconds * 16000)).astype("float32")
    samples[: 4000] *= 0.01  # a quiet start: the clip's dB range matters
    return write(path, samples)


def whole_clip_features(backbone, waveform):
    """The in-memory path: the frontend on the whole clip, frames zero-padded to whole patches."""
    spectrogram = to_numpy(backbone.make_frontend()(waveform[None]))
    spectrogram = to_numpy(fit_frames(spectrogram, whole_patch_frames(spectrogram.shape[1], backbone.patch_size)))
    if backbone.use_padding_mask:
        spectrogram = {"spectrogram": spectrogram, "padding_mask": np.ones(spectrogram.shape[:2], bool)}
    features = backbone(spectrogram)
    return to_numpy(features["cls_tokens"])[0], to_numpy(features["patch_tokens"])[0].mean(axis=2)


# 3.05 s: 4 whole chunks and 50 frames (in batches of 3: a partial batch before the shorter chunk); 2.56 s:
# 4 whole chunks and a lone frame past them (in batches of 3: the stream ends on a partial batch); 2.9 s: a
# last chunk of 3 patches (padded to 4 and masked where the backbone takes a mask); 4.7 s in batches of 4:
# 7 whole chunks, the last batch of 3 padded to 4; 2.2 s in batches of 8: 3 whole chunks padded to 4.
# The layouts are the streamer's arithmetic, the same under every backend: each backend runs a shorter
# last chunk, a masked one and a padded batch; the torch pass runs every layout.
LAYOUT_ONLY = in_one_backend_pass("torch", "this chunk layout")


@pytest.mark.parametrize("encoder", sorted(BACKBONES))
@pytest.mark.parametrize("batch_size, seconds", [
    pytest.param(1, 3.05, marks=LAYOUT_ONLY), (3, 3.05), pytest.param(3, 2.56, marks=LAYOUT_ONLY), (2, 2.9), (4, 4.7),
    pytest.param(8, 2.2, marks=LAYOUT_ONLY)])
@pytest.mark.long
def test_streamed_chunks_equal_the_whole_clip(encoder, batch_size, seconds, tmp_path):
    path = recording(tmp_path / "long.wav", seconds)
    backbone = BACKBONES[encoder]()
    waveform = load_audio(path)
    expected_cls, expected_frames = whole_clip_features(backbone, waveform)

    streamer = RecordingStream(backbone, batch_size=batch_size)
    outputs = [features for _, features in streamer.encode(path, len(waveform))]
    cls_tokens = np.concatenate([features["cls_tokens"] for features in outputs])
    frames = np.concatenate([features["patch_tokens"].mean(axis=3).transpose(0, 2, 1, 3).reshape(-1, 2, 32)
                             for features in outputs])
    chunks = -(-streamer.time_patches(len(waveform)) // 4)
    assert len(cls_tokens) == chunks > 3  # several chunks, the last one shorter
    np.testing.assert_allclose(cls_tokens.mean(axis=0), expected_cls, atol=1e-5)
    np.testing.assert_allclose(frames, expected_frames.transpose(1, 0, 2), atol=1e-5)
    # The same recording in memory streams to the same features.
    in_memory = [features for _, features in streamer.encode(waveform, len(waveform))]
    for features, expected in zip(in_memory, outputs):
        for name, value in expected.items():
            np.testing.assert_allclose(features[name], value, atol=1e-6)


def test_windows_reflect_and_pad_like_the_frontend(tmp_path):
    path = write(tmp_path / "short.wav", np.arange(1, 2001, dtype="float32") / 2000)
    samples = load_audio(path)
    # Reflection at both ends of the clip, as a centred STFT pads it.
    np.testing.assert_array_equal(load_window(path, -3, 3, 2000), samples[[3, 2, 1, 0, 1, 2]])
    np.testing.assert_array_equal(load_window(path, 1997, 2003, 2000), samples[[1997, 1998, 1999, 1998, 1997, 1996]])
    # A clip longer than the file: zeros after the file's end, reflected at the clip's end.
    np.testing.assert_array_equal(load_window(path, 1998, 2004, 2003), [samples[1998], samples[1999], 0, 0, 0, 0])


def test_embed_command_at_natural_length_with_layers(tmp_path):
    folder = tmp_path / "recordings"
    folder.mkdir()
    recording(folder / "a.wav", seconds=3.05)
    recording(folder / "b.wav", seconds=1.3, seed=1)
    preset = tmp_path / "preset"
    backbone = BACKBONES["bat"]()
    backbone.save_to_preset(str(preset))
    output = tmp_path / "embeddings"
    assert main(["embed", str(folder), "--backbone", str(preset), "--frames", "--layers", "last",
                 "--batch-size", "2", "--output", str(output)]) == 0
    with open(output / "manifest.csv") as f:
        manifest = list(csv.DictReader(f))
    # 3.05 s: 306 frames -> 20 patches; 1.3 s: 131 frames -> 9 patches.
    assert [(int(r["first_frame"]), int(r["frames"])) for r in manifest] == [(0, 20), (20, 9)]
    frames = np.load(output / "frame_embeddings.npy")
    assert frames.shape == (29, 1, 32)
    expected_cls, expected_frames = whole_clip_features(backbone, load_audio(folder / "b.wav"))
    np.testing.assert_allclose(np.load(output / "clip_embeddings.npy")[1, 0], expected_cls[-1], atol=1e-5)
    np.testing.assert_allclose(frames[20:, 0], expected_frames[-1], atol=1e-5)
    info = json.loads((output / "info.json").read_text())
    assert info["layers"] == [1] and info["seconds_per_patch"] == pytest.approx(0.16)
    assert info["first_patch_center_seconds"] == pytest.approx(0.075)


def test_layers_option():
    assert parse_layers("all", 4) == [0, 1, 2, 3] and parse_layers("last", 4) == [3]
    assert parse_layers("0,-1", 4) == [0, 3]
    with pytest.raises(ValueError, match="blocks 0 to 3"):
        parse_layers("5", 4)
    with pytest.raises(ValueError, match="--layers"):
        parse_layers("first", 4)


def test_failed_files_have_no_rows_and_the_manifest_says_why(tmp_path, capfd):
    from audio_files import bad_files

    from keras_bat.cli import run

    files = bad_files(tmp_path / "bad")
    folder = tmp_path / "recordings"
    folder.mkdir()
    for reason in ("NaN samples", "odd sample rate", "not audio"):
        (folder / Path(files[reason]).name).write_bytes(Path(files[reason]).read_bytes())
    recording(folder / "a_good.wav", seconds=1.3)
    recording(folder / "z_good.wav", seconds=2.0, seed=2)
    cut = (folder / "c_cut.wav")
    write(cut, tone(2.0), subtype="PCM_16")
    cut.write_bytes(cut.read_bytes()[:-16000])  # the header declares 2 s, the file holds 1.5 s
    preset = tmp_path / "preset"
    backbone = BACKBONES["bat"]()
    backbone.save_to_preset(str(preset))
    output = tmp_path / "embeddings"
    assert run(["embed", str(folder), "--backbone", str(preset), "--frames", "--output", str(output)]) == 0
    with open(output / "manifest.csv") as f:
        manifest = {Path(row["path"]).name: row for row in csv.DictReader(f)}
    assert {name: (row["status"], row["detail"]) for name, row in manifest.items()} == {
        "a_good.wav": ("ok", ""), "c_cut.wav": ("truncated", "the file holds less audio than its header declares"),
        "nan.wav": ("failed", "NaN or inf samples"), "notes.wav": ("failed", "not a readable audio file"),
        "rate500.wav": ("failed", "unsupported sample rate"), "z_good.wav": ("ok", "")}
    clips, frames = np.load(output / "clip_embeddings.npy"), np.load(output / "frame_embeddings.npy")
    assert clips.shape[0] == 3 and [manifest[name]["clip_row"] for name in ("a_good.wav", "c_cut.wav", "z_good.wav")] \
        == ["0", "1", "2"]
    assert frames.shape[0] == sum(int(row["frames"]) for row in manifest.values())
    # 1.3 s: 9 patches; the cut file embeds what it holds (1.5 s: 10 patches); 2.0 s: 13 patches.
    assert [(manifest[n]["first_frame"], manifest[n]["frames"]) for n in ("a_good.wav", "c_cut.wav", "z_good.wav")] \
        == [("0", "9"), ("9", "10"), ("19", "13")]
    for name in ("c_cut.wav", "z_good.wav"):
        row = manifest[name]
        expected_cls, expected_frames = whole_clip_features(backbone, load_audio(folder / name, keep_truncated=True))
        np.testing.assert_allclose(clips[int(row["clip_row"])], expected_cls, atol=1e-5)
        first = int(row["first_frame"])
        np.testing.assert_allclose(frames[first:first + int(row["frames"])], expected_frames.transpose(1, 0, 2),
                                   atol=1e-5)
    assert (output / "skipped.tsv").read_text().count("\n") == 3
    error = capfd.readouterr().err
    assert "3 file(s) skipped: " in error and str(output / "skipped.tsv") in error
    assert json.loads((output / "run.json").read_text())["status"] == "complete"


def test_a_folder_of_only_bad_files_writes_skipped_tsv_and_fails_in_one_line(tmp_path, capfd):
    from keras_bat.cli import run

    folder = tmp_path / "recordings"
    folder.mkdir()
    (folder / "a.wav").write_text("not audio")
    (folder / "b.mp3").write_bytes(b"\xff\xfb" + bytes(100))
    preset = tmp_path / "preset"
    BACKBONES["bat"]().save_to_preset(str(preset))
    output = tmp_path / "embeddings"
    assert run(["embed", str(folder), "--backbone", str(preset), "--output", str(output)]) == 2
    error = [line for line in capfd.readouterr().err.splitlines() if line.startswith("keras-bat: error:")]
    assert len(error) == 1 and "none of the 2 audio files could be read" in error[0]
    assert len((output / "skipped.tsv").read_text().splitlines()) == 2
    assert json.loads((output / "run.json").read_text())["status"] == "failed"
    assert not list(output.glob("*.npy"))


def embed_folder(tmp_path, files=3, seconds=1.3):
    folder = tmp_path / "recordings"
    folder.mkdir(exist_ok=True)
    for index in range(files):
        recording(folder / f"{index:02d}.wav", seconds=seconds, seed=index)
    preset = tmp_path / "preset"
    if not preset.exists():
        BACKBONES["bat"]().save_to_preset(str(preset))
    return folder, preset


def test_outputs_of_another_run_are_never_left_beside_a_new_one(tmp_path, capfd):
    from keras_bat.cli import run

    folder, preset = embed_folder(tmp_path)
    output = tmp_path / "embeddings"
    arguments = ["embed", str(folder), "--backbone", str(preset), "--output", str(output)]
    assert run(arguments + ["--frames"]) == 0
    first = np.load(output / "clip_embeddings.npy")
    # The same command again: nothing to do, the result stays.
    assert run(arguments + ["--frames"]) == 0
    assert "already holds this run, complete" in capfd.readouterr().err
    np.testing.assert_array_equal(np.load(output / "clip_embeddings.npy"), first)
    # Another run into the same folder: refused in one line, nothing touched.
    assert run(arguments + ["--layers", "last"]) == 2
    error = capfd.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "holds another embed run" in error[0] and "layers" in error[0] and "frames" in error[0]
    assert (output / "frame_embeddings.npy").exists()
    # --overwrite: the new run's files only (no frame embeddings of the old one).
    assert run(arguments + ["--layers", "last", "--overwrite"]) == 0
    assert sorted(p.name for p in output.iterdir()) == ["clip_embeddings.npy", "info.json", "manifest.csv",
                                                       "run.json", "skipped.tsv"]
    assert np.load(output / "clip_embeddings.npy").shape == (3, 1, 32)
    # A folder of someone else's files is refused.
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("x")
    assert run(["embed", str(folder), "--backbone", str(preset), "--output", str(other)]) == 2
    assert "that no keras-bat run described" in capfd.readouterr().err
    assert run(["embed", str(folder), "--backbone", str(preset), "--output", str(other / "todo.txt")]) == 2
    assert "is a file, not a folder" in capfd.readouterr().err


def test_ctrl_c_is_raised_only_where_the_run_checks_for_it():
    import os
    import signal

    from keras_bat.workflows.run_folder import StopBetweenSteps

    before = signal.getsignal(signal.SIGINT)
    with StopBetweenSteps() as stop:
        os.kill(os.getpid(), signal.SIGINT)  # noted, not raised
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            stop.check()
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C: at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
    with StopBetweenSteps() as stop:
        stop.check()  # nothing pending: nothing raised


@pytest.mark.parametrize("signal_name", [  # SIGINT is handled in the process (every backend); SIGKILL is not
    "SIGINT", pytest.param("SIGKILL", marks=in_one_backend_pass("torch", "resuming after SIGKILL"))])
@pytest.mark.long
def test_an_interrupted_embed_resumes_to_the_uninterrupted_result(tmp_path, signal_name, capfd, rng):
    import signal
    import subprocess
    import sys
    import time

    from keras_bat.cli import run

    stop_after = int(rng.integers(1, 7))  # finished files before the signal
    folder, preset = embed_folder(tmp_path, files=8, seconds=6.0)
    arguments = ["embed", str(folder), "--backbone", str(preset), "--frames", "--batch-size", "1"]
    assert run(arguments + ["--output", str(tmp_path / "whole")]) == 0
    output = tmp_path / "interrupted"
    process = subprocess.Popen([sys.executable, "-m", "keras_bat", *arguments, "--output", str(output)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    manifest, deadline = output / "manifest.csv.partial", time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if manifest.exists() and manifest.read_text().count("\n") >= stop_after + 1:  # header + finished files
            break
        time.sleep(0.02)
    process.send_signal(getattr(signal, signal_name))
    _, error = process.communicate(timeout=60)
    assert process.returncode != 0, f"the run ended before the signal (after {stop_after} files)"
    run_file = json.loads((output / "run.json").read_text())
    assert run_file["status"] == "partial"
    assert not (output / "clip_embeddings.npy").exists() and not (output / "manifest.csv").exists()
    if signal_name == "SIGINT":
        assert process.returncode == 130, error[-3000:]
        lines = [line for line in error.splitlines() if line.startswith("keras-bat: error:")]
        assert len(lines) == 1 and "run the same command again to resume" in lines[0], error[-2000:]
    finished = len(manifest.read_text().splitlines()) - 1
    assert finished >= stop_after
    assert run(arguments + ["--output", str(output)]) == 0  # resumes
    for name in ("clip_embeddings.npy", "frame_embeddings.npy"):
        np.testing.assert_allclose(np.load(output / name), np.load(tmp_path / "whole" / name), atol=1e-6,
                                   err_msg=f"stopped after {stop_after} files")
    assert (output / "manifest.csv").read_text() == (tmp_path / "whole" / "manifest.csv").read_text()
    assert json.loads((output / "run.json").read_text())["status"] == "complete"
