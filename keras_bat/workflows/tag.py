"""Labels and sound events of recordings in one call: `AudioTagger`, and the `keras-bat tag` run
that writes them for a folder of files.

Every recording is streamed whole through the task model, a chunk at a time
(`keras_bat.models.RecordingStream`, as `keras-bat embed` streams), the head run in the same
call as the backbone: a clip-level head keeps its constant-size chunk summaries
(`chunk_summary`), a frame-level head turns each chunk into the model's frame probabilities,
which go straight into the event decoder; only these leave the device. A recording shorter than
the model's training length (its frontend's `time_frames`) is zero-padded to it, as in
training. Memory does not grow with a recording's length.
"""

import csv
import io
import json
import os
import sys
from pathlib import Path

import numpy as np

from keras_bat.data.audio import AudioDecodeError, audio_info, mono_waveform
from keras_bat.data.datasets import AUDIO_EXTENSIONS
from keras_bat.errors import UsageError
from keras_bat.layers.chunk_merge import ChunkSummaries
from keras_bat.models.streaming import FrameProbabilities, HeadChunkSummary, RecordingStream
from keras_bat.ops import no_gradients
from keras_bat.training.metrics import EventDecoder
from keras_bat.workflows.run_folder import StopBetweenSteps, audio_progress, file_fingerprint, write_json_atomically

DEFAULT_THRESHOLD = 0.5


class AudioTagger:
    """Labels (and, with a frame-level head, sound events) of recordings, in one call.

    Takes audio file paths, folders (searched recursively) or waveforms at any sample rate,
    channel count and length; returns, per input, its top-k labels with names and scores, and
    with a frame-level head an event table after per-class thresholds and median filtering.
    A file that cannot be decoded gets `status: "failed"` and the reason; the others go on.

    Args:
        model: an `AudioClassifier` (task `multiclass`, `multilabel` or `frame`).
        top_k: int, labels per recording. Defaults to 5.
        thresholds: float, a list (one per class) or a dict `label name -> threshold` (others
            0.5): where a frame-level head's event starts. Defaults to 0.5.
        median_filter: float, seconds of the median filter over each class's frame
            probabilities (rounded to an odd number of time patches; 0: none). Defaults to 0.5.
        batch_size: int, time chunks per forward pass. Defaults to 4.

    Scores are probabilities: softmax over classes for `multiclass`, sigmoid per class
    otherwise; a frame-level head's clip score of a class is its highest frame probability.

    Example:
    >>> tagger = AudioTagger.from_preset("hf://me/my-birds")  # or a folder written by save_to_preset
    >>> tagger(["dawn.wav", "dusk.mp3"], top_k=3)
    [{"source": "dawn.wav", "status": "ok", "seconds": 62.0,
      "labels": [{"label": "wren", "score": 0.91}, ...]}, ...]
    >>> tagger(waveform, sample_rate=44100)  # one input: one result
    """

    def __init__(self, model, top_k=5, thresholds=DEFAULT_THRESHOLD, median_filter=0.5, batch_size=4):
        if model.backbone is None:
            raise UsageError("AudioTagger needs a model with its backbone (this one reads precomputed features).")
        if model.task not in ("multiclass", "multilabel", "frame"):
            raise UsageError(f"AudioTagger labels classification models; this one's task is {model.task!r}.")
        if not model.built:  # heads create their weights on their first call
            model(model.example_input())
        self.model = model
        self.top_k = _positive_int(top_k, "top_k")
        num_classes = model.head.num_classes
        self.label_names = list(model.label_names or [f"class_{i}" for i in range(num_classes)])
        if len(self.label_names) != num_classes:
            raise UsageError(f"The model has {num_classes} outputs but {len(self.label_names)} label names.")
        self.thresholds = _class_thresholds(thresholds, self.label_names)
        self.frame_level = model.task == "frame"
        self.keep = FrameProbabilities(model) if self.frame_level else HeadChunkSummary(model.head)
        self.streamer = RecordingStream(model.backbone, model.frontend, _positive_int(batch_size, "batch_size"),
                                        keep=self.keep)
        if not median_filter >= 0:
            raise UsageError(f"median_filter must be >= 0 seconds. Received: {median_filter!r}")
        patches = int(round(median_filter / self.seconds_per_patch))
        self.median_window = max(1, patches + (patches % 2 == 0))

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """The tagger of a task preset: a folder written by `AudioClassifier.save_to_preset`, a
        `.keras` file, or a Hub URI (`hf://owner/repo[/subfolder]`) of such a folder."""
        from keras_bat.models.audio_classifier import AudioClassifier
        from keras_bat.models.presets import load_model_source

        model = load_model_source(preset)
        if not isinstance(model, AudioClassifier):
            raise UsageError(f"{preset} is an encoder without a head ({type(model).__name__}): tagging needs a task "
                             "preset (keras-bat probe / finetune write one to <run>/preset).")
        return cls(model, **kwargs)

    @property
    def seconds_per_patch(self):
        """Seconds between two time patches (frames of the event table)."""
        return self.streamer.seconds_per_patch

    @property
    def sample_rate(self):
        return self.streamer.frontend.sample_rate

    def __call__(self, inputs, sample_rate=None, top_k=None, events=None):
        """Labels (and events) of one input or a list of inputs.

        Args:
            inputs: a path (a file, or a folder searched recursively), a waveform array
                (`(samples,)`, `(channels, samples)` or `(samples, channels)`), or a list of them.
            sample_rate: int, the waveforms' sample rate (required for arrays).
            top_k: int or `None` (the tagger's).
            events: bool or `None`: the event table (`None`: with a frame-level head).

        Returns:
            A dict per input (a list for a list or a folder): `source`, `status` (`ok`,
            `truncated`: the file holds less than its header declares, what decodes is
            labelled; `failed`), `seconds`, `labels` (`[{"label", "score"}]`, best first),
            `events` (`[{"onset", "offset", "label", "score"}]`, seconds, by onset) and
            `detail` (why a file failed or is truncated).
        """
        single = not isinstance(inputs, (list, tuple)) and not (
            isinstance(inputs, (str, os.PathLike)) and os.path.isdir(inputs))
        results = list(self.iterate(expand_inputs(inputs), sample_rate, top_k, events))
        return results[0] if single else results

    def iterate(self, inputs, sample_rate=None, top_k=None, events=None, progress=None):
        """Yields the result of each input in turn (see `__call__`); `progress(seconds)` is
        called as audio is processed."""
        for item in inputs:
            yield self.tag_one(item, sample_rate, top_k, events, progress)

    def tag_one(self, source, sample_rate=None, top_k=None, events=None, progress=None, info=None):
        """The result of one file path or waveform (see `__call__`); `info`: the file's
        `audio_info` (or the `AudioDecodeError` reading it raised), when the caller has it."""
        top_k = self.top_k if top_k is None else _positive_int(top_k, "top_k")
        events = self.frame_level if events is None else bool(events)
        if events and not self.frame_level:
            raise UsageError(f"Events need a frame-level head (task 'frame'); this model's task is "
                             f"{self.model.task!r}: it gives clip labels only.")
        name = "waveform" if isinstance(source, np.ndarray) else os.fspath(source)
        result = {"source": name, "status": "ok", "seconds": 0.0, "labels": [], "detail": ""}
        if events:
            result["events"] = []
        try:
            if isinstance(source, np.ndarray) or not isinstance(source, (str, os.PathLike)):
                if sample_rate is None:
                    raise UsageError("A waveform needs its sample_rate.")
                audio, info = mono_waveform(source, sample_rate, self.sample_rate), None
                samples = len(audio)
            else:
                if isinstance(info, AudioDecodeError):
                    raise info
                audio, info = name, info or audio_info(name)
                samples = int(round(info["frames"] * self.sample_rate / info["sample_rate"]))
                if info["truncated"]:
                    result.update(status="truncated", detail="the file holds less audio than its header declares")
            result["seconds"] = samples / self.sample_rate
            if samples <= self.streamer.frontend.window_length // 2:
                raise AudioDecodeError(name, "too short", f"{samples} samples")
            scores, found = self._scores(audio, samples, info, events, progress)
        except AudioDecodeError as error:
            return {**result, "status": "failed", "detail": error.reason}
        order = np.argsort(-scores, kind="stable")[:top_k]
        result["labels"] = [{"label": self.label_names[i], "score": float(scores[i])} for i in order]
        if events:
            result["events"] = sorted(
                ({"onset": round(first * self.seconds_per_patch, 4),
                  "offset": round(min(end * self.seconds_per_patch, result["seconds"]), 4),
                  "label": self.label_names[label], "score": score} for first, end, label, score in found),
                key=lambda event: (event["onset"], event["label"]))
        return result

    def _scores(self, audio, samples, info, events, progress):
        """`(class scores, events)` of one recording, streamed a batch of chunks at a time."""
        with no_gradients():  # else torch would keep the head's activations of every call for a backward pass
            return self._stream_scores(audio, samples, info, events, progress)

    def _stream_scores(self, audio, samples, info, events, progress):
        decoder = EventDecoder(self.thresholds, self.median_window) if events else None
        summaries, frame_maximum, found = ChunkSummaries(), None, []
        seconds_left = samples / self.sample_rate
        frames_left = self.streamer.own_time_patches(samples)  # not those of the padding to the training length
        for time_patches, outputs in self.streamer.encode(audio, samples, info, self.model.streamed_query_tokens()):
            chunks = len(next(iter(outputs.values())))
            if not self.frame_level:
                self.keep.add_chunks(outputs, time_patches, summaries)
            elif frames_left > 0:  # a frame head's outputs are per time patch: chunk by chunk
                probabilities = outputs["probabilities"].reshape(-1, len(self.label_names))[:frames_left]
                frames_left -= len(probabilities)
                peak = probabilities.max(axis=0)
                frame_maximum = peak if frame_maximum is None else np.maximum(frame_maximum, peak)
                if decoder is not None:
                    found += decoder.add(probabilities)
            if progress is not None:
                step = min(chunks * time_patches * self.seconds_per_patch, seconds_left)
                progress(step)
                seconds_left -= step
        if progress is not None and seconds_left > 0:
            progress(seconds_left)
        if decoder is not None:
            found += decoder.finish()
        if self.frame_level:
            return frame_maximum.astype("float64"), found
        import keras

        logits = self.model.head.call_on_summary(summaries.result(), training=False)
        return keras.ops.convert_to_numpy(self.model.probabilities(logits))[0].astype("float64"), found


def expand_inputs(inputs):
    """A list of what `AudioTagger` takes: folders become their audio files (recursively, sorted)."""
    if not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    expanded = []
    for item in inputs:
        if isinstance(item, (str, os.PathLike)) and os.path.isdir(item):
            found = sorted(str(p) for p in Path(item).rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS
                           and p.is_file())
            if not found:
                raise UsageError(f"{item}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found.")
            expanded += found
        else:
            expanded.append(item)
    return expanded


def parse_thresholds(text):
    """`--threshold`: one probability (`0.3`), or `label=value` pairs separated by commas."""
    try:
        if "=" not in text:
            return float(text)
        pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
        return {name.strip(): float(value) for name, value in pairs}
    except ValueError:
        raise UsageError(f"--threshold takes a probability (0.3) or label=value pairs (dog=0.3,rain=0.6). "
                         f"Received: {text!r}") from None


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UsageError(f"{name} must be a whole number >= 1. Received: {value!r}")
    return int(value)


def _class_thresholds(thresholds, label_names):
    if isinstance(thresholds, dict):
        unknown = sorted(set(thresholds) - set(label_names))
        if unknown:
            raise UsageError(f"Thresholds for unknown labels {unknown}; the model's labels are {label_names}.")
        values = [thresholds.get(name, DEFAULT_THRESHOLD) for name in label_names]
    elif np.ndim(thresholds) == 0:
        values = [thresholds] * len(label_names)
    else:
        values = list(thresholds)
        if len(values) != len(label_names):
            raise UsageError(f"{len(values)} thresholds for {len(label_names)} classes.")
    values = np.asarray(values, "float32")
    if not np.all((values >= 0) & (values <= 1)):
        raise UsageError(f"Thresholds are probabilities between 0 and 1. Received: {thresholds!r}")
    return values


# --- keras-bat tag: a folder of files to a results table ---------------------------------------

CSV_COLUMNS = ["path", "status", "seconds", "kind", "rank", "label", "score", "onset", "offset", "detail"]


class ResultsFile:
    """The results of a `keras-bat tag` run, written file by file to `<output>.partial` (CSV
    rows, or JSON lines) and renamed to `<output>` (for JSON: one list) when the run is complete.
    A rerun of the same command after a kill keeps the finished files and goes on."""

    def __init__(self, path, identity, overwrite=False):
        self.path = Path(path)
        if self.path.suffix.lower() not in (".csv", ".json"):
            raise UsageError(f"--output {path}: the results file must end in .csv or .json.")
        self.format = self.path.suffix.lower()[1:]
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.run_file = self.path.with_name(self.path.name + ".run.json")
        self.done = []
        if self.partial.exists() and not overwrite:
            previous = json.loads(self.run_file.read_text()) if self.run_file.exists() else None
            if previous != identity:
                raise FileExistsError(f"{self.partial} holds a partial run of another command: pass --overwrite to "
                                      "start again.")
            self.done = self._finished_sources()
        elif self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists: pass --overwrite to replace it.")
        if not self.done:
            write_json_atomically(self.run_file, identity)
            self.partial.write_text(",".join(CSV_COLUMNS) + "\n" if self.format == "csv" else "")
        self.file = open(self.partial, "a", newline="")

    def _finished_sources(self):
        """The inputs the partial file holds complete (rows of a file are written at once)."""
        if self.format == "json":
            lines = self.partial.read_text().splitlines()
            return [json.loads(line)["source"] for line in lines if line.strip()]
        with open(self.partial, newline="") as f:
            return list(dict.fromkeys(row["path"] for row in csv.DictReader(f)))

    def write(self, result):
        """Writes one input's rows at once, to disk before the next input starts."""
        if self.format == "json":
            self.file.write(json.dumps(result) + "\n")
        else:
            rows = io.StringIO()
            writer = csv.writer(rows)
            common = [result["source"], result["status"], f"{result['seconds']:.3f}"]
            if result["status"] == "failed":
                writer.writerow(common + ["", "", "", "", "", "", result["detail"]])
            for rank, label in enumerate(result["labels"], 1):
                writer.writerow(common + ["clip", rank, label["label"], f"{label['score']:.6f}", 0,
                                          f"{result['seconds']:.3f}", result["detail"]])
            for event in result.get("events", []):
                writer.writerow(common + ["event", "", event["label"], f"{event['score']:.6f}", event["onset"],
                                          event["offset"], result["detail"]])
            self.file.write(rows.getvalue())
        self.file.flush()
        os.fsync(self.file.fileno())

    def finish(self):
        self.file.close()
        if self.format == "json":
            results = [json.loads(line) for line in self.partial.read_text().splitlines() if line.strip()]
            write_json_atomically(self.partial, results)
        os.replace(self.partial, self.path)
        self.run_file.unlink(missing_ok=True)

    def close(self):
        if not self.file.closed:
            self.file.close()


def run_tag(inputs, model, output, top_k=5, events=False, thresholds=DEFAULT_THRESHOLD, median_filter=0.5,
            batch_size=4, overwrite=False):
    """Tags the audio files `inputs` (files and folders) with the task model `model` (a task
    preset folder, `.keras` file or Hub URI) and writes `output` (`.csv` or `.json`).

    CSV rows: `path, status, seconds, kind, rank, label, score, onset, offset, detail`, `kind`
    `clip` for the top-k labels (ranked; onset 0 and offset the recording's end) and `event`
    for events; a failed file has one row with its reason. JSON: the list of `AudioTagger`
    results. Returns a summary dict (files, failed files and their reasons)."""
    tagger = AudioTagger.from_preset(model, top_k=top_k, thresholds=thresholds, median_filter=median_filter,
                                     batch_size=batch_size)
    if events and not tagger.frame_level:
        raise UsageError(f"--events needs a frame-level head (task 'frame'); {model} has task "
                         f"{tagger.model.task!r}.")
    paths = expand_inputs([os.fspath(item) for item in inputs])
    identity = {"inputs": [os.path.abspath(p) for p in paths], "files": [_fingerprint(p) for p in paths],
                "model": str(model), "top_k": top_k, "events": bool(events), "thresholds": thresholds,
                "median_filter": median_filter}
    results = ResultsFile(output, identity, overwrite)
    if results.done != paths[:len(results.done)]:
        raise FileExistsError(f"{results.partial} does not list the inputs in order: pass --overwrite to start again.")
    remaining = paths[len(results.done):]
    infos = {}  # each file's audio_info, read once (an MP3's length is counted by decoding it)
    for path in remaining:
        try:
            infos[path] = audio_info(path)
        except AudioDecodeError as error:
            infos[path] = error
    seconds = sum(info["duration"] for info in infos.values() if isinstance(info, dict))
    progress = audio_progress(seconds, "tagging")
    failed = []

    def advance(seconds):  # after each batch of chunks: the progress bar, then a pending Ctrl-C
        progress.update(seconds)
        stop.check()

    with StopBetweenSteps() as stop:
        try:
            for path in remaining:
                result = tagger.tag_one(path, events=events, progress=advance, info=infos[path])
                if result["status"] == "failed":
                    failed.append((path, result["detail"]))
                    progress.write(f"{path}: failed ({result['detail']})", file=sys.stderr)
                results.write(result)
                stop.check()
        finally:
            progress.close()
            results.close()
    results.finish()
    return {"output": str(output), "files": len(paths), "tagged": len(paths) - len(failed),
            "resumed_after": len(results.done), "failed": [{"path": p, "reason": r} for p, r in failed]}


def _fingerprint(path):
    try:
        return file_fingerprint(path)
    except OSError:
        return None
