"""Embeddings of a folder of recordings, each at its own length, streamed.

Each file is framed a window at a time (`keras_bat.data.audio.load_window`),
normalised as the frontend normalises the whole clip (a first pass gathers the
clip's statistics), and encoded chunk by chunk exactly as the backbone encodes
long inputs (`chunk_time_patches` per chunk, class tokens averaged over
chunks, patch tokens concatenated); results are written to `.npy` files as
they come. Memory does not grow with the recordings' length.
"""

import csv
import json
from pathlib import Path

import numpy as np

from keras_bat.data.audio import SAMPLE_RATE, AudioDecodeError, audio_info, load_window
from keras_bat.data.datasets import audio_files
from keras_bat.layers.patching import whole_patch_frames
from keras_bat.workflows.builders import build_backbone


def parse_layers(layers, depth):
    """Block indices for `--layers`: `"all"`, `"last"`, `"mean"` (all, averaged) or `"0,5,11"`."""
    if layers in ("all", "mean"):
        return list(range(depth))
    if layers == "last":
        return [depth - 1]
    try:
        indices = [int(part) for part in str(layers).split(",")]
    except ValueError:
        raise ValueError(f"--layers must be all, last, mean or block indices like 0,5,11. Received: {layers!r}") \
            from None
    if any(not -depth <= i < depth for i in indices):
        raise ValueError(f"--layers {layers}: the backbone has blocks 0 to {depth - 1}.")
    return [i % depth for i in indices]


class RowWriter:
    """Writes a `.npy` array block of rows by block of rows, in order, with plain file writes:
    written rows go to the page cache, not into this process's memory as with a memory map."""

    def __init__(self, path, shape, dtype="float32"):
        array = np.lib.format.open_memmap(path, "w+", dtype, shape)  # the header, and the file at full size
        self.offset, self.dtype, self.shape = array.offset, np.dtype(dtype), shape
        del array
        self.file = open(path, "r+b")
        self.file.seek(self.offset)
        self.row_bytes = int(np.prod(shape[1:])) * self.dtype.itemsize

    def write(self, rows):
        self.file.write(np.ascontiguousarray(rows, self.dtype).tobytes())

    def skip(self, count):
        """Leaves `count` rows as zeros."""
        self.file.seek(count * self.row_bytes, 1)

    def close(self):
        self.file.close()


class RecordingEncoder:
    """Streams recordings through a backbone, a chunk of `chunk_time_patches` at a time.

    Args:
        backbone: a `BATBackbone` or `BEATsBackbone`.
        batch_size: int, chunks per forward pass.
    """

    def __init__(self, backbone, batch_size=8):
        self.backbone = backbone
        self.frontend = backbone.make_frontend()
        self.batch_size = batch_size
        self.chunk_frames = backbone.chunk_time_patches * backbone.patch_size

    def layout(self, clip_samples):
        """`(frames, time patches)` of a clip of `clip_samples` samples: the frontend's frames
        that whole patches hold (see `whole_patch_frames`)."""
        frames = self.frontend.num_frames(clip_samples)
        padded = whole_patch_frames(frames, self.backbone.patch_size)
        return min(frames, padded), padded // self.backbone.patch_size

    def _windows(self, path, info, clip_samples, frames, statistics=None):
        for first in range(0, frames, self.chunk_frames):
            count = min(self.chunk_frames, frames - first)
            window = load_window(path, *self.frontend.frame_span(first, count), clip_samples, info=info)
            chunk = self.frontend.window_frames(window)
            yield chunk if statistics is None else self.frontend.normalise_frames(chunk, statistics)

    def encode(self, path, clip_samples):
        """Yields the backbone's outputs `(cls_tokens (chunks, depth, dim), patch_tokens
        (chunks, depth, time patches, freq patches, dim))` of one recording, a batch of
        chunks at a time, as NumPy arrays; the last chunk comes alone when it is shorter."""
        import keras

        info, statistics = audio_info(path), None
        if self.frontend.normalises_per_clip:  # a first pass gathers the statistics of all the clip's frames
            for chunk in self._windows(path, info, clip_samples, self.frontend.num_frames(clip_samples)):
                statistics = self.frontend.merge_statistics(statistics, self.frontend.frame_statistics(chunk))
        batch = []
        for chunk in self._windows(path, info, clip_samples, self.layout(clip_samples)[0], statistics):
            chunk = keras.ops.convert_to_numpy(chunk)
            pad = -len(chunk) % self.backbone.patch_size  # zero frames, as the frontend pads a clip
            if pad or len(chunk) < self.chunk_frames:
                if batch:
                    yield self._run(np.stack(batch))
                    batch = []
                yield self._run(np.pad(chunk, [(0, pad), (0, 0)])[None])
                continue
            batch.append(chunk)
            if len(batch) == self.batch_size:
                yield self._run(np.stack(batch))
                batch = []
        if batch:
            yield self._run(np.stack(batch))

    def _run(self, spectrograms):
        import keras

        from keras_bat.ops import no_gradients

        with no_gradients():
            features = self.backbone(spectrograms, training=False)
        return (keras.ops.convert_to_numpy(features["cls_tokens"]).astype("float32"),
                keras.ops.convert_to_numpy(features["patch_tokens"]).astype("float32"))


def run_embed(folder, output, backbone="bat_base", weights=None, checkpoint_key=None, clip_seconds=None,
              batch_size=8, frames=False, layers="all", encoder="bat"):
    """Writes to the folder `output`: `clip_embeddings.npy` `(files, layers, dim)` (class
    tokens averaged over chunks), with `frames=True` `frame_embeddings.npy` `(patches of all
    files, layers, dim)` (patch tokens averaged over frequency, one per time patch, files one
    after another), `manifest.csv` (path, seconds, first_frame, frames: the rows of each file;
    status: `ok`, or why a file failed while it was read, its rows left zero), `info.json`
    (layers, seconds per patch, the first patch's centre) and `skipped.tsv`.

    Each file is embedded at its own length, or cut or zero-padded to `clip_seconds`.
    `layers`: `all`, `last`, `mean` (averaged over the blocks) or block indices `0,5,11`.
    """
    from tqdm.auto import tqdm

    dataset = audio_files(folder)
    model = build_backbone({"encoder": encoder, "backbone": backbone, "weights": weights,
                            "checkpoint_key": checkpoint_key, "drop_path": 0.0, "dtype": None})
    streamer = RecordingEncoder(model, batch_size)
    selected = parse_layers(layers, model.depth)
    reduce = (lambda x: x.mean(axis=-2, keepdims=True)) if layers == "mean" else (lambda x: x)

    recordings, skipped = [], []
    for clip in dataset.clips:
        try:
            info = audio_info(clip.path)
        except AudioDecodeError as error:
            skipped.append((clip.path, error.reason))
            continue
        samples = (int(round(info["frames"] * SAMPLE_RATE / info["sample_rate"])) if clip_seconds is None
                   else int(round(clip_seconds * SAMPLE_RATE)))
        if samples <= streamer.frontend.window_length // 2:
            skipped.append((clip.path, "too short"))
            continue
        recordings.append((clip.path, samples))
    if not recordings:
        raise ValueError(f"{folder}: no file could be read; see {output}/skipped.tsv.")

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    width = 1 if layers == "mean" else len(selected)
    patches = [streamer.layout(samples)[1] for _, samples in recordings]
    clip_embeddings = RowWriter(output / "clip_embeddings.npy", (len(recordings), width, model.dim))
    frame_embeddings = None
    if frames:
        frame_embeddings = RowWriter(output / "frame_embeddings.npy", (sum(patches), width, model.dim))
    first_frames = np.concatenate([[0], np.cumsum(patches)[:-1]]).astype(int)
    total_seconds = sum(samples for _, samples in recordings) / SAMPLE_RATE
    progress = tqdm(total=round(total_seconds, 2), unit="s audio", desc="embedding",
                    bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s of audio [{elapsed}<{remaining}]")
    chunk_seconds = streamer.chunk_frames * streamer.frontend.hop_length / SAMPLE_RATE
    status = ["ok"] * len(recordings)
    for index, (path, samples) in enumerate(recordings):
        cls_sum, chunks, row, left = 0.0, 0, first_frames[index], samples / SAMPLE_RATE
        try:
            for cls_tokens, patch_tokens in streamer.encode(path, samples):
                cls_sum = cls_sum + cls_tokens[:, selected].sum(axis=0)
                chunks += len(cls_tokens)
                if frame_embeddings is not None:
                    tokens = patch_tokens[:, selected].mean(axis=3).transpose(0, 2, 1, 3)  # chunks, T, layers, D
                    tokens = reduce(tokens.reshape(-1, len(selected), model.dim))
                    count = min(len(tokens), first_frames[index] + patches[index] - row)
                    frame_embeddings.write(tokens[:count])
                    row += count
                done = min(len(cls_tokens) * chunk_seconds, left)
                progress.update(done)
                left -= done
        except AudioDecodeError as error:  # e.g. a file cut short: its rows stay zero, the manifest says why
            status[index] = error.reason
            skipped.append((path, error.reason))
            progress.update(left)
            clip_embeddings.skip(1)
            if frame_embeddings is not None:
                frame_embeddings.skip(first_frames[index] + patches[index] - row)
            continue
        clip_embeddings.write(reduce(cls_sum / chunks)[None])
    progress.close()
    clip_embeddings.close()
    if frame_embeddings is not None:
        frame_embeddings.close()
    with open(output / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "seconds", "first_frame", "frames", "status"])
        for (path, samples), first, count, state in zip(recordings, first_frames, patches, status):
            writer.writerow([path, f"{samples / SAMPLE_RATE:.6f}", int(first), int(count), state])
    with open(output / "skipped.tsv", "w") as f:
        f.writelines(f"{path}\t{reason}\n" for path, reason in skipped)
    centers = streamer.frontend.patch_centers(2, model.patch_size)
    info = {"layers": "mean" if layers == "mean" else selected, "dim": model.dim,
            "seconds_per_patch": float(centers[1] - centers[0]), "first_patch_center_seconds": float(centers[0]),
            "clip_seconds": clip_seconds, "backbone": str(backbone), "weights": weights}
    (output / "info.json").write_text(json.dumps(info, indent=2))
    return {"output": str(output), "files": len(recordings), "skipped_files": len(skipped),
            "clip_embeddings": list(clip_embeddings.shape), "hours": round(total_seconds / 3600, 4)}
