"""Embeddings of a folder of recordings, each at its own length, streamed.

Each file streams through `keras_bat.models.RecordingStream`: framed a window
at a time, normalised as the frontend normalises the whole clip, and encoded
chunk by chunk exactly as the backbone encodes long inputs, the selected
blocks' tokens picked on the device (`EmbeddingRows`); class tokens are
averaged over chunks, frame rows written to `.npy` files as they come. Memory
does not grow with the recordings' length.
"""

import csv
import io
import os
from pathlib import Path

import keras
import numpy as np

from keras_bat.data.audio import SAMPLE_RATE, AudioDecodeError, audio_info
from keras_bat.data.datasets import audio_files
from keras_bat.errors import UsageError
from keras_bat.models.streaming import RecordingStream
from keras_bat.workflows.builders import build_backbone
from keras_bat.workflows.run_folder import (RunFolder, StopBetweenSteps, audio_progress, digest, file_fingerprint,
                                           write_json_atomically)


def parse_layers(layers, depth):
    """Block indices for `--layers`: `"all"`, `"last"`, `"mean"` (all, averaged) or `"0,5,11"`."""
    if layers in ("all", "mean"):
        return list(range(depth))
    if layers == "last":
        return [depth - 1]
    try:
        indices = [int(part) for part in str(layers).split(",")]
    except ValueError:
        raise UsageError(f"--layers must be all, last, mean or block indices like 0,5,11. Received: {layers!r}") \
            from None
    if any(not -depth <= i < depth for i in indices):
        raise UsageError(f"--layers {layers}: the backbone has blocks 0 to {depth - 1}.")
    return [i % depth for i in indices]


class RowFile:
    """A `.npy` array written row block by row block, appended with plain file writes (written
    rows go to the page cache, not into this process's memory as with a memory map).

    While the run goes on the file is `<name>.partial` and its header is blank, so that it cannot
    be loaded as a result; `finish` writes the header for the rows written and renames it to
    `<name>`. The data always starts at byte `HEADER_BYTES`, so a partial file resumes as it is.
    """

    HEADER_BYTES = 128  # numpy's version 1.0 header for shapes like these, padded to 64 bytes

    def __init__(self, path, row_shape, rows=0, dtype="float32"):
        self.path, self.row_shape, self.dtype = Path(path), tuple(row_shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        self.partial = self.path.with_name(self.path.name + ".partial")
        if self.path.exists() and not self.partial.exists():  # renamed, then killed before the run was complete
            os.replace(self.path, self.partial)
        self.file = open(self.partial, "r+b" if self.partial.exists() else "w+b")
        self.rows = rows
        self.file.truncate(self.HEADER_BYTES + rows * self.row_bytes)  # rows past `rows`: an unfinished file
        self.file.seek(0, os.SEEK_END)

    def write(self, rows):
        rows = np.ascontiguousarray(rows, self.dtype)
        self.file.write(rows.tobytes())
        self.rows += len(rows)

    def rewind(self, rows):
        """Drops the rows after the first `rows` (those of a file that failed half way)."""
        self.file.truncate(self.HEADER_BYTES + rows * self.row_bytes)
        self.file.seek(0, os.SEEK_END)
        self.rows = rows

    def flush(self):
        self.file.flush()

    def finish(self):
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                      "fortran_order": False, "shape": (self.rows, *self.row_shape)})
        if len(header.getvalue()) != self.HEADER_BYTES:
            raise RuntimeError(f"{self.path}: a .npy header of {len(header.getvalue())} bytes does not fit the "
                               f"{self.HEADER_BYTES} reserved.")
        self.close()
        with open(self.partial, "r+b") as file:
            file.write(header.getvalue())
        os.replace(self.partial, self.path)

    def close(self):
        if not self.file.closed:
            self.file.close()


class EmbeddingRows(keras.layers.Layer):
    """What `keras-bat embed` keeps of each chunk, on the device: the selected blocks' class
    tokens `(chunks, layers, dim)` and, with `frames`, their patch tokens averaged over
    frequency `(chunks, layers, time patches, dim)`."""

    def __init__(self, layers, frames, **kwargs):
        super().__init__(**kwargs)
        self.layer_indices, self.frames = list(layers), frames
        self.built = True

    def call(self, features):
        indices = keras.ops.convert_to_tensor(self.layer_indices, "int32")
        rows = {"cls_tokens": keras.ops.take(features["cls_tokens"], indices, axis=1)}
        if self.frames:
            rows["frame_tokens"] = keras.ops.mean(keras.ops.take(features["patch_tokens"], indices, axis=1), axis=3)
        return rows


MANIFEST_COLUMNS = ["path", "seconds", "status", "clip_row", "first_frame", "frames", "detail"]
OUTPUTS = ("clip_embeddings.npy", "frame_embeddings.npy", "manifest.csv", "skipped.tsv", "info.json")


class EmbedInterrupted(KeyboardInterrupt):
    """Ctrl-C during `run_embed`; the message says how far it got and how to resume."""


def run_embed(folder, output, backbone="bat_base", weights=None, checkpoint_key=None, clip_seconds=None,
              batch_size=8, frames=False, layers="all", encoder="bat", resume=None, overwrite=False):
    """Writes the embeddings of every audio file under `folder` to the folder `output`.

    Outputs: `clip_embeddings.npy` `(files, layers, dim)` (class tokens
    averaged over chunks); with `frames=True` `frame_embeddings.npy`
    `(patches of all files, layers, dim)` (patch tokens averaged over
    frequency, one row per time patch, files one after another);
    `manifest.csv`, one line per file in order: path, seconds, status (`ok`,
    `truncated`: the file holds less than its header declares, what decodes is
    embedded; `failed`: no rows), `clip_row`, `first_frame` and `frames` (its
    rows; empty and 0 for failed files), detail; `skipped.tsv` (failed files
    and why); `info.json` (layers, seconds per patch, the first patch's
    centre) and `run.json` (command, settings, versions, status).

    Arrays and manifest are written as `<name>.partial` while the run goes on
    and renamed when the last file is in; `run.json` says `partial` until
    then. A rerun of the same command continues a partial run from the last
    finished file; a folder that holds another run is refused unless
    `overwrite`.

    Args:
        folder: folder of audio files (searched recursively).
        output: the output folder.
        backbone: preset name or preset directory. Defaults to `"bat_base"`.
        weights: official checkpoint, or `None`.
        checkpoint_key: e.g. `"ema_encoder"`.
        clip_seconds: float or `None`: each file cut or zero-padded to this
            length, or (`None`) embedded at its own length.
        batch_size: int >= 1, chunks per forward pass. Defaults to 8.
        frames: bool, also write `frame_embeddings.npy`.
        layers: `"all"`, `"last"`, `"mean"` (averaged over the blocks) or
            block indices `"0,5,11"`.
        encoder: `bat`, `eat`, `sslam` or `beats`.
        resume: `None` (resume a partial run of the same command), `True`, or
            `False` (start again).
        overwrite: bool, replace another run in `output`.

    Returns:
        dict: output folder, files embedded, skipped files (path, reason), shape.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size must be a whole number >= 1. Received: {batch_size!r}")
    if clip_seconds is not None and not clip_seconds > 0:
        raise UsageError(f"clip_seconds must be > 0 seconds. Received: {clip_seconds!r}")
    dataset = audio_files(folder)
    identity = {"folder": str(Path(folder).resolve()), "encoder": encoder,
                "backbone": backbone if not os.path.isdir(str(backbone)) else file_fingerprint(backbone),
                "weights": None if weights is None else file_fingerprint(weights), "checkpoint_key": checkpoint_key,
                "clip_seconds": clip_seconds, "frames": bool(frames), "layers": str(layers),
                "files": digest([file_fingerprint(clip.path) for clip in dataset.clips])}
    run = RunFolder(output, "embed", identity, OUTPUTS)
    state = run.open(resume, overwrite)
    output = Path(output)
    if state == "complete":
        return {**_summary(output, len(dataset.clips)), "already_complete": True}

    model = build_backbone({"encoder": encoder, "backbone": backbone, "weights": weights,
                            "checkpoint_key": checkpoint_key, "drop_path": 0.0, "dtype": None}, use_padding_mask=True)
    selected = parse_layers(layers, model.depth)
    streamer = RecordingStream(model, batch_size=batch_size, keep=EmbeddingRows(selected, frames))
    reduce = (lambda x: x.mean(axis=-2, keepdims=True)) if layers == "mean" else (lambda x: x)
    width = 1 if layers == "mean" else len(selected)

    if state == "resume" and not (output / "manifest.csv.partial").exists() and (output / "manifest.csv").exists():
        os.replace(output / "manifest.csv", output / "manifest.csv.partial")  # killed while finishing
    manifest = _read_manifest(output / "manifest.csv.partial") if state == "resume" else []
    done = len(manifest)
    if [row["path"] for row in manifest] != [clip.path for clip in dataset.clips[:done]]:
        raise FileExistsError(f"{output}: its partial manifest does not list the folder's files in order: "
                              "pass --overwrite to start again.")
    clip_rows = sum(row["status"] != "failed" for row in manifest)
    frame_rows = sum(int(row["frames"]) for row in manifest)
    clip_embeddings = RowFile(output / "clip_embeddings.npy", (width, model.dim), clip_rows)
    frame_embeddings = RowFile(output / "frame_embeddings.npy", (width, model.dim), frame_rows) if frames else None
    manifest_file = _open_manifest(output / "manifest.csv.partial", rows=manifest)
    writer = csv.writer(manifest_file)

    infos = {}  # the files still to embed: their lengths, for the progress bar
    for clip in dataset.clips[done:]:
        try:
            infos[clip.path] = audio_info(clip.path)
        except AudioDecodeError as error:
            infos[clip.path] = error
    total_seconds = sum(_samples(info, clip_seconds) for info in infos.values()
                        if not isinstance(info, Exception)) / SAMPLE_RATE
    progress = audio_progress(total_seconds, "embedding")
    chunk_seconds = streamer.chunk_frames * streamer.frontend.hop_length / SAMPLE_RATE
    skipped = [(row["path"], row["detail"]) for row in manifest if row["status"] == "failed"]
    with StopBetweenSteps() as stop:  # Ctrl-C: after the chunk in hand
        try:
            for clip in dataset.clips[done:]:
                info = infos[clip.path]
                samples = 0 if isinstance(info, Exception) else _samples(info, clip_seconds)
                status, detail = "ok", ""
                if isinstance(info, Exception):
                    status, detail = "failed", info.reason
                elif samples <= streamer.frontend.window_length // 2:
                    status, detail = "failed", "too short"
                elif info["truncated"]:
                    status, detail = "truncated", "the file holds less audio than its header declares"
                first_frame, left, patches = frame_embeddings.rows if frames else 0, samples / SAMPLE_RATE, 0
                if status != "failed":
                    cls_sum, chunks = 0.0, 0
                    patches = streamer.time_patches(samples)
                    try:
                        for _, rows in streamer.encode(clip.path, samples, info):
                            cls_tokens = rows["cls_tokens"]
                            cls_sum = cls_sum + cls_tokens.sum(axis=0)
                            chunks += len(cls_tokens)
                            if frames:
                                tokens = rows["frame_tokens"].transpose(0, 2, 1, 3)  # chunks, T, L, D
                                tokens = reduce(tokens.reshape(-1, len(selected), model.dim))
                                frame_embeddings.write(tokens[:first_frame + patches - frame_embeddings.rows])
                            step = min(len(cls_tokens) * chunk_seconds, left)
                            progress.update(step)
                            left -= step
                            stop.check()
                    except AudioDecodeError as error:  # read while embedding: no rows
                        status, detail, patches = "failed", error.reason, 0
                        if frames:
                            frame_embeddings.rewind(first_frame)
                    else:
                        clip_embeddings.write(reduce(cls_sum / chunks)[None])
                progress.update(left)
                if status == "failed":
                    skipped.append((clip.path, detail))
                # The rows first, then the manifest line that counts them: a kill between the two
                # leaves rows that a resume drops.
                clip_embeddings.flush()
                if frames:
                    frame_embeddings.flush()
                writer.writerow([clip.path, f"{samples / SAMPLE_RATE:.6f}", status,
                                 "" if status == "failed" else clip_embeddings.rows - 1,
                                 first_frame if status != "failed" else "", patches, detail])
                manifest_file.flush()
                done += 1
                stop.check()
        except KeyboardInterrupt:
            raise EmbedInterrupted(f"interrupted after {done} of {len(dataset.clips)} files; {output} is marked "
                                   "partial: run the same command again to resume.") from None
        finally:
            progress.close()
            manifest_file.close()
            for array in (clip_embeddings, frame_embeddings):
                if array is not None:
                    array.close()

    with open(output / "skipped.tsv", "w") as f:
        f.writelines(f"{path}\t{reason}\n" for path, reason in skipped)
    if clip_embeddings.rows == 0:
        run.mark("failed", reason="no file could be read")
        raise UsageError(f"{folder}: none of the {len(dataset.clips)} audio files could be read; "
                         f"{skipped_text(skipped, output)}")
    centers = streamer.frontend.patch_centers(2, model.patch_size)
    write_json_atomically(output / "info.json", {
        "layers": "mean" if layers == "mean" else selected, "dim": model.dim,
        "seconds_per_patch": float(centers[1] - centers[0]), "first_patch_center_seconds": float(centers[0]),
        "clip_seconds": clip_seconds, "backbone": str(backbone), "weights": weights})
    for array in (clip_embeddings, frame_embeddings):
        if array is not None:
            array.finish()
    os.replace(output / "manifest.csv.partial", output / "manifest.csv")
    run.mark("complete", backend=keras.backend.backend())
    return _summary(output, len(dataset.clips))


def skipped_text(skipped, output, shown=3):
    """One line for the console: how many files were skipped, the first few, and where the list is."""
    names = "; ".join(f"{path} ({reason})" for path, reason in skipped[:shown])
    more = f" and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return f"{len(skipped)} file(s) skipped: {names}{more}; the list: {Path(output) / 'skipped.tsv'}"


def _summary(output, files):
    manifest = _read_manifest(output / "manifest.csv")
    skipped = [(row["path"], row["detail"]) for row in manifest if row["status"] == "failed"]
    shape = list(np.load(output / "clip_embeddings.npy", mmap_mode="r").shape)
    return {"output": str(output), "files": files, "embedded": files - len(skipped),
            "truncated": sum(row["status"] == "truncated" for row in manifest), "skipped": skipped,
            "clip_embeddings": shape, "hours": round(sum(float(row["seconds"]) for row in manifest) / 3600, 4)}


def _samples(info, clip_seconds):
    if clip_seconds is not None:
        return int(round(clip_seconds * SAMPLE_RATE))
    return int(round(info["frames"] * SAMPLE_RATE / info["sample_rate"]))


def _read_manifest(path):
    """The manifest's complete lines (a line cut by a kill is not one)."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]
    return list(csv.DictReader(lines))


def _open_manifest(path, rows):
    """The manifest, rewritten with its complete `rows` and open for appending."""
    file = open(path, "w", newline="")
    writer = csv.DictWriter(file, MANIFEST_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    file.flush()
    return file
