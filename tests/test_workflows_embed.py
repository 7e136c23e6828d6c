"""Streamed whole-recording embeddings equal the backbone run on the whole clip at once."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from audio_files import tone, write
from helpers import to_numpy

from keras_bat.cli import main
from keras_bat.data.audio import load_audio, load_window
from keras_bat.layers.frontend import fit_frames
from keras_bat.layers.patching import whole_patch_frames
from keras_bat.models import BATBackbone, BEATsBackbone
from keras_bat.workflows.embed import RecordingEncoder, parse_layers

# Chunks of 4 time patches (64 frames, 0.64 s), so that a few seconds make several chunks.
BACKBONES = {
    "bat": lambda: BATBackbone(dim=32, depth=2, num_heads=2, chunk_time_patches=4),
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
    features = backbone(spectrogram)
    return to_numpy(features["cls_tokens"])[0], to_numpy(features["patch_tokens"])[0].mean(axis=2)


@pytest.mark.parametrize("encoder", sorted(BACKBONES))
@pytest.mark.parametrize("batch_size, seconds", [(1, 3.05), (3, 3.05), (2, 2.56)])  # 2.56 s: a lone last frame
def test_streamed_chunks_equal_the_whole_clip(encoder, batch_size, seconds, tmp_path):
    path = recording(tmp_path / "long.wav", seconds)
    backbone = BACKBONES[encoder]()
    waveform = load_audio(path)
    expected_cls, expected_frames = whole_clip_features(backbone, waveform)

    streamer = RecordingEncoder(backbone, batch_size)
    outputs = list(streamer.encode(path, len(waveform)))
    cls_tokens = np.concatenate([cls for cls, _ in outputs])
    frames = np.concatenate([patches.mean(axis=3).transpose(0, 2, 1, 3).reshape(-1, 2, 32)
                             for _, patches in outputs])
    chunks = -(-streamer.layout(len(waveform))[1] // 4)
    assert len(cls_tokens) == chunks > 3  # several chunks, the last one shorter
    np.testing.assert_allclose(cls_tokens.mean(axis=0), expected_cls, atol=1e-5)
    np.testing.assert_allclose(frames, expected_frames.transpose(1, 0, 2), atol=1e-5)


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


def test_files_that_fail_while_read_keep_zero_rows_and_say_why(tmp_path):
    from audio_files import bad_files

    files = bad_files(tmp_path / "bad")
    folder = tmp_path / "recordings"
    folder.mkdir()
    for reason in ("truncated file", "NaN samples", "odd sample rate"):
        (folder / Path(files[reason]).name).write_bytes(Path(files[reason]).read_bytes())
    recording(folder / "z_good.wav", seconds=1.3)
    preset = tmp_path / "preset"
    BACKBONES["bat"]().save_to_preset(str(preset))
    output = tmp_path / "embeddings"
    assert main(["embed", str(folder), "--backbone", str(preset), "--frames", "--output", str(output)]) == 0
    with open(output / "manifest.csv") as f:
        manifest = {Path(row["path"]).name: row for row in csv.DictReader(f)}
    assert {name: row["status"] for name, row in manifest.items()} == {
        "nan.wav": "NaN or inf samples", "rate500.wav": "unsupported sample rate",
        "truncated.wav": "truncated file", "z_good.wav": "ok"}
    clips, frames = np.load(output / "clip_embeddings.npy"), np.load(output / "frame_embeddings.npy")
    good = manifest["z_good.wav"]
    rows = slice(int(good["first_frame"]), int(good["first_frame"]) + int(good["frames"]))
    assert not clips[:3].any() and clips[3].any()
    assert frames[rows].any() and not np.delete(frames, np.arange(rows.start, rows.stop), axis=0).any()
