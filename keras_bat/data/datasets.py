"""Datasets as lists of clips read from each benchmark's standard on-disk layout.

A dataset holds no audio: each `Clip` names a file (and optionally a segment
of it) and its label; `keras_bat.data.pipeline` decodes them. Nothing here
downloads anything: point each reader at the folder you downloaded.
"""

import csv
import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from keras_bat.data.audio import PATCH_SECONDS, audio_info
from keras_bat.errors import UsageError
from keras_bat.registry import Registry

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif")
SPEECH_COMMANDS_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")


@dataclasses.dataclass(frozen=True)
class Clip:
    """One example: an audio file (or a segment of it) and its label.

    `label` is an int (multiclass), a tuple of ints (multilabel), a tuple of
    `(onset_s, offset_s, class_index)` events (frame) or a transcript (ctc).
    """

    path: str
    label: object
    offset: float = 0.0
    duration: float = None


@dataclasses.dataclass
class AudioDataset:
    """Clips of one split, the task they pose and the class names.

    Args:
        clips: list of `Clip`.
        task: `"multiclass"`, `"multilabel"`, `"frame"`, `"ctc"` or
            `"unlabeled"` (pretraining).
        class_names: list of str (for ctc, the tokenizer's characters).
        name: str, for logs.
    """

    clips: list
    task: str
    class_names: list
    name: str = ""

    def __len__(self):
        return len(self.clips)

    @property
    def num_classes(self):
        return len(self.class_names)

    def subset(self, indices, name=None):
        return AudioDataset([self.clips[i] for i in indices], self.task, self.class_names, name or self.name)

    def target(self, clip, time_patches=None, patch_seconds=PATCH_SECONDS):
        """The training target of `clip` as a NumPy array.

        Frame targets are `(time_patches, classes)`: a patch is active when its
        start time (`index * patch_seconds`) lies inside an event, as in the
        reference's DCASE recipe.
        """
        if self.task == "multiclass":
            return np.int32(clip.label)
        if self.task == "unlabeled":
            return np.float32(0.0)
        if self.task == "multilabel":
            target = np.zeros(self.num_classes, "float32")
            target[list(clip.label)] = 1.0
            return target
        if self.task == "frame":
            if time_patches is None:
                raise UsageError("Frame targets need `time_patches`.")
            target = np.zeros((time_patches, self.num_classes), "float32")
            times = np.arange(time_patches) * patch_seconds
            for onset, offset, class_index in clip.label:
                target[(times >= onset) & (times <= offset), class_index] = 1.0
            return target
        return np.asarray(CharTokenizer().encode(clip.label), "int32")

    def label_counts(self):
        """Clips per class (multiclass and multilabel datasets)."""
        counts = np.zeros(self.num_classes, "int64")
        for clip in self.clips:
            counts[_label_indices(clip.label)] += 1
        return counts


def balanced_sampling_weights(dataset, reduce="mean"):
    """Per-clip sampling weights from inverse class frequencies.

    Args:
        dataset: `AudioDataset` (multiclass or multilabel).
        reduce: `"mean"` over a clip's labels (the reference's AudioSet-2M
            sampler) or `"first"` label only (its HSN sampler).

    Returns:
        float64 array `(clips,)` that sums to 1.
    """
    if reduce not in ("mean", "first"):
        raise UsageError(f"`reduce` must be 'mean' or 'first'. Received: {reduce!r}")
    inverse = 1.0 / np.maximum(dataset.label_counts(), 1)
    weights = np.array([inverse[_label_indices(c.label)].mean() if reduce == "mean"
                        else inverse[_label_indices(c.label)[0]] for c in dataset.clips])
    return weights / weights.sum()


def _label_indices(label):
    indices = [label] if np.isscalar(label) else list(label)
    if not indices:
        raise UsageError("A clip without labels cannot be weighted by class frequency.")
    return indices


class CharTokenizer:
    """Characters for CTC: `<blank>` (0), space, apostrophe and a-z."""

    characters = ("<blank>", " ", "'") + tuple(chr(c) for c in range(ord("a"), ord("z") + 1))

    def encode(self, text):
        text = re.sub(r"[^a-z ']", "", text.lower())
        return [self.characters.index(c) for c in text]

    def decode(self, ids):
        return "".join(self.characters[i] for i in ids if i != 0)


# --- AudioSet ---------------------------------------------------------------------

def audioset(root, version="as20k"):
    """AudioSet from the segment CSVs, `ontology.json` and wav folders.

    Layout (`root/`): `eval_segments.csv` + `eval_segments/`, and
    `balanced_train_segments.csv` + `balanced_train_segments/` (AS-20K) or
    `unbalanced_train_segments.csv` + `unbalanced_train_segments/` (AS-2M);
    wav files named `<YTID>.wav` or `Y<YTID>.wav`. Segments without a file are
    left out. Classes are the names that occur in the eval set, sorted (527
    for the full release), as in the reference.

    Returns:
        dict `{"train": AudioDataset, "eval": AudioDataset}` (multilabel).
    """
    root = Path(root)
    train_name = {"as20k": "balanced_train_segments", "as2m": "unbalanced_train_segments"}.get(version)
    if train_name is None:
        raise UsageError(f"`version` must be 'as20k' or 'as2m'. Received: {version!r}")
    ontology = _read_json(root / "ontology.json")
    id_to_name = {entry["id"]: entry["name"] for entry in ontology}
    splits = {split: _audioset_segments(root, folder, id_to_name)
              for split, folder in (("eval", "eval_segments"), ("train", train_name))}
    class_names = sorted({name for _, names in splits["eval"] for name in names})
    index = {name: i for i, name in enumerate(class_names)}
    return {split: AudioDataset([Clip(path, tuple(sorted({index[n] for n in names if n in index})))
                                 for path, names in rows], "multilabel", class_names, f"audioset/{split}")
            for split, rows in splits.items()}


def _audioset_segments(root, folder, id_to_name):
    csv_path = root / f"{folder}.csv"
    files = {p.stem[1:] if p.stem.startswith("Y") else p.stem: p for p in _files(root / folder, (".wav",))}
    rows = []
    for line in _read_lines(csv_path):
        if not line.strip() or line.startswith("#"):
            continue
        parts = [part.strip() for part in line.split(",", 3)]
        if len(parts) != 4:
            raise UsageError(f"{csv_path}: expected 'YTID, start, end, \"labels\"', got {line!r}")
        path = files.get(parts[0])
        if path is not None:
            mids = parts[3].replace('"', "").replace(" ", "").split(",")
            rows.append((str(path), [id_to_name.get(mid, "Unknown") for mid in mids]))
    return rows


# --- ESC-50 -----------------------------------------------------------------------

def esc50(root, test_fold):
    """ESC-50 split for one fold of its 5-fold cross validation.

    Layout: `root/meta/esc50.csv` (filename, fold, target, category, ...) and
    `root/audio/*.wav`.

    Returns:
        dict `{"train": folds != test_fold, "test": fold == test_fold}`.
    """
    if test_fold not in range(1, 6):
        raise UsageError(f"`test_fold` must be 1 to 5. Received: {test_fold!r}")
    root = Path(root)
    rows = _read_csv(root / "meta" / "esc50.csv", ("filename", "fold", "target", "category"))
    names = {int(r["target"]): r["category"] for r in rows}
    class_names = [names.get(i, str(i)) for i in range(max(names) + 1)]
    split = {"train": [], "test": []}
    for r in rows:
        split["test" if int(r["fold"]) == test_fold else "train"].append(
            Clip(str(root / "audio" / r["filename"]), int(r["target"])))
    return {k: AudioDataset(v, "multiclass", class_names, f"esc50/fold{test_fold}/{k}") for k, v in split.items()}


# --- Speech Commands v2 -----------------------------------------------------------

def speech_commands(root, background_seconds=1.0):
    """Speech Commands v2 with 12 classes: 10 words, unknown (10), silence (11).

    Layout: one folder per word, `validation_list.txt`, `testing_list.txt`,
    `_background_noise_/*.wav`. The background recordings are cut into
    `background_seconds` chunks labelled silence, split 80/10/10 by chunk
    index within each file.

    Returns:
        dict `{"train", "validation", "test"}` of multiclass datasets.
    """
    root = Path(root)
    listed = {name: set(_read_lines(root / f"{name}_list.txt")) if (root / f"{name}_list.txt").exists() else set()
              for name in ("validation", "testing")}
    class_names = list(SPEECH_COMMANDS_WORDS) + ["_unknown_", "_silence_"]
    splits = {"train": [], "validation": [], "test": []}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "_background_noise_"):
        label = SPEECH_COMMANDS_WORDS.index(folder.name) if folder.name in SPEECH_COMMANDS_WORDS else 10
        for path in _files(folder, (".wav",)):
            relative = f"{folder.name}/{path.name}"
            split = ("validation" if relative in listed["validation"]
                     else "test" if relative in listed["testing"] else "train")
            splits[split].append(Clip(str(path), label))
    for path in _files(root / "_background_noise_", (".wav",)):
        chunks = math.floor(audio_info(path)["duration"] / background_seconds)
        for i in range(chunks):
            split = "train" if i < 0.8 * chunks else "validation" if i < 0.9 * chunks else "test"
            splits[split].append(Clip(str(path), 11, i * background_seconds, background_seconds))
    return {k: AudioDataset(v, "multiclass", class_names, f"speech_commands/{k}") for k, v in splits.items()}


# --- HSN / BirdSet ----------------------------------------------------------------

def birdset(root, name="HSN"):
    """A BirdSet subset (HSN by default) from local files.

    Layout: `root/<name>_ebird_codes.json` (`{"label2id": {code: index}}`),
    `root/train.csv` and `root/test_5s.csv` with columns `filepath` and
    `ebird_code_multilabel` (class indices separated by `;`, or a JSON list);
    `test_5s.csv` rows may give `start_time` and `end_time` (seconds) of the
    segment. Relative file paths are taken from `root`. Export these from the
    BirdSet release (e.g. its `to_csv()`).

    Returns:
        dict `{"train", "test"}` of multilabel datasets.
    """
    root = Path(root)
    label2id = _read_json(root / f"{name}_ebird_codes.json")["label2id"]
    class_names = [code for code, _ in sorted(label2id.items(), key=lambda item: int(item[1]))]
    splits = {}
    for split, csv_name in (("train", "train.csv"), ("test", "test_5s.csv")):
        clips = []
        for r in _read_csv(root / csv_name, ("filepath", "ebird_code_multilabel")):
            path = r["filepath"] if os.path.isabs(r["filepath"]) else str(root / r["filepath"])
            start, end = r.get("start_time") or "", r.get("end_time") or ""
            segment = (float(start), float(end) - float(start)) if start and end else (0.0, None)
            clips.append(Clip(path, _parse_indices(r["ebird_code_multilabel"], csv_name), *segment))
        splits[split] = AudioDataset(clips, "multilabel", class_names, f"{name.lower()}/{split}")
    return splits


# --- DCASE2016 task 2 -------------------------------------------------------------

def dcase2016_task2(root, sample_rate_folder="48000"):
    """DCASE2016 task 2 (sound event detection) in the HEAR layout.

    Layout: `root/{train,valid,test}.json` (`{filename: [{"label", "start",
    "end"}]}`, times in ms), `root/labelvocabulary.csv` (`idx,label`), audio
    in `root/<sample_rate_folder>/<split>/<filename>`.

    Returns:
        dict of frame-task datasets for the splits present; each clip's label
        is a tuple of `(onset_s, offset_s, class_index)` events.
    """
    root = Path(root)
    vocabulary = _read_csv(root / "labelvocabulary.csv", ("idx", "label"))
    class_names = [r["label"] for r in sorted(vocabulary, key=lambda r: int(r["idx"]))]
    index = {name: i for i, name in enumerate(class_names)}
    splits = {}
    for split in ("train", "valid", "test"):
        if not (root / f"{split}.json").exists():
            continue
        clips = []
        for filename, events in _read_json(root / f"{split}.json").items():
            unknown = {e["label"] for e in events} - set(index)
            if unknown:
                raise UsageError(f"{root / f'{split}.json'}: {filename} has labels missing from "
                                 f"labelvocabulary.csv: {sorted(unknown)}")
            label = tuple((e["start"] / 1000.0, e["end"] / 1000.0, index[e["label"]]) for e in events)
            clips.append(Clip(str(root / sample_rate_folder / split / filename), label))
        splits[split] = AudioDataset(clips, "frame", class_names, f"dcase2016_task2/{split}")
    if not splits:
        raise UsageError(f"{root}: no train.json, valid.json or test.json found.")
    return splits


# --- LibriSpeech ------------------------------------------------------------------

def librispeech(root, split="train-clean-100"):
    """LibriSpeech from its release folders (`root/<split>/<speaker>/<chapter>/`
    with `*.flac` and `<speaker>-<chapter>.trans.txt`), for character CTC."""
    folder = Path(root) / split
    if not folder.is_dir():
        raise UsageError(f"LibriSpeech split folder not found: {folder}")
    clips = []
    for transcript in sorted(folder.glob("*/*/*.trans.txt")):
        for line in _read_lines(transcript):
            if line.strip():
                utterance, text = line.strip().split(" ", 1)
                clips.append(Clip(str(transcript.parent / f"{utterance}.flac"), text))
    return AudioDataset(clips, "ctc", list(CharTokenizer.characters), f"librispeech/{split}")


# --- The user's own audio ---------------------------------------------------------

def folder_dataset(root, name=None):
    """One sub-folder per class (sorted names), audio files inside (multiclass)."""
    root = Path(root)
    class_names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not class_names:
        raise UsageError(f"{root}: expected one sub-folder of audio files per class.")
    clips = [Clip(str(path), i) for i, name_ in enumerate(class_names) for path in _files(root / name_)]
    return AudioDataset(clips, "multiclass", class_names, name or root.name)


def csv_dataset(csv_path, path_column="path", label_column="label", separator=";", class_names=None,
                name=None):
    """Clips listed in a CSV: a file path (relative to the CSV's folder) and
    class names separated by `separator`. A CSV where some clip has several
    labels gives a multilabel dataset, otherwise a multiclass one."""
    csv_path = Path(csv_path)
    rows = _read_csv(csv_path, (path_column, label_column))
    labels = [[s.strip() for s in r[label_column].split(separator) if s.strip()] for r in rows]
    class_names = list(class_names) if class_names else sorted({n for names in labels for n in names})
    index = {n: i for i, n in enumerate(class_names)}
    unknown = sorted({n for names in labels for n in names} - set(index))
    if unknown:
        raise UsageError(f"{csv_path}: labels not in class_names: {unknown}")
    multilabel = any(len(names) != 1 for names in labels)
    clips = []
    for r, names in zip(rows, labels):
        path = r[path_column] if os.path.isabs(r[path_column]) else str(csv_path.parent / r[path_column])
        indices = tuple(sorted(index[n] for n in names))
        clips.append(Clip(path, indices if multilabel else indices[0]))
    return AudioDataset(clips, "multilabel" if multilabel else "multiclass", class_names,
                        name or csv_path.stem)


def labelled_dataset(root, test_fraction=0.2, seed=0, name=None):
    """`{"train", "test"}` of your own labelled recordings: a folder with one sub-folder of audio
    files per class (searched recursively), or a CSV file of `path` and `label` columns (paths
    relative to the CSV's folder; several labels separated by `;` make it multilabel).

    The split: a folder holding `train/` and `test/` (each with class sub-folders) keeps them;
    a CSV with a `split` column (`train` / `test`) keeps it; otherwise each class's files are
    split `1 - test_fraction` / `test_fraction`, at least one of each for a class of two or more
    files, ranked by a hash of each file's name, its folder's name and `seed` (the same files go
    to the same split on every run and machine)."""
    root = Path(root)
    if root.is_file():
        rows = _read_csv(root, ("path", "label"))
        paths = [r["path"] for r in rows]
        repeated = sorted({p for p in paths if paths.count(p) > 1})
        if repeated:
            raise UsageError(f"{root}: these paths are listed more than once: {repeated[:5]} (give one row per file, "
                             "its labels separated by ';').")
        dataset = csv_dataset(root, name=name or root.stem)
        if "split" in rows[0]:
            splits = {r["split"].strip() for r in rows}
            if not splits <= {"train", "test"}:
                raise UsageError(f"{root}: the split column takes train or test; found {sorted(splits)}.")
            return {split: _subset(dataset, [c for c, r in zip(dataset.clips, rows) if r["split"].strip() == split])
                    for split in ("train", "test")}
        return _split_by_class(dataset, test_fraction, seed)
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder or CSV file of labelled recordings.")
    if (root / "train").is_dir() and (root / "test").is_dir():
        train, test = (_class_folders(root / split, name or root.name) for split in ("train", "test"))
        if train.class_names != test.class_names:
            raise UsageError(f"{root}: train/ and test/ hold different classes: {train.class_names} and "
                             f"{test.class_names}.")
        return {"train": train, "test": test}
    return _split_by_class(_class_folders(root, name or root.name), test_fraction, seed)


def _class_folders(root, name):
    class_names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_names:
        raise UsageError(f"{root}: expected one sub-folder of audio files per class (e.g. {root}/dog/*.wav).")
    clips, empty = [], []
    for index, class_name in enumerate(class_names):
        files = sorted(p for p in (root / class_name).rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
        if not files:
            empty.append(class_name)
        clips += [Clip(str(path), index) for path in files]
    if empty:
        raise UsageError(f"{root}: the class folders {empty} hold no audio files ({', '.join(AUDIO_EXTENSIONS)}).")
    return AudioDataset(clips, "multiclass", class_names, name)


def _split_by_class(dataset, test_fraction, seed):
    import hashlib

    if not 0 < test_fraction < 1:
        raise UsageError(f"test_fraction must be between 0 and 1. Received: {test_fraction!r}")

    def rank(clip):
        where = Path(clip.path)  # its folder's and its own name: the same wherever the data set lies
        return hashlib.sha1(f"{seed}:{where.parent.name}/{where.name}".encode()).hexdigest()

    by_class = {}
    for clip in dataset.clips:
        first = clip.label if isinstance(clip.label, (int, np.integer)) else clip.label[0]
        by_class.setdefault(int(first), []).append(clip)
    test = set()
    for clips in by_class.values():
        count = min(max(round(len(clips) * test_fraction), 1), len(clips) - 1)
        test.update(clip.path for clip in sorted(clips, key=rank)[:count])
    return {"train": _subset(dataset, [c for c in dataset.clips if c.path not in test]),
            "test": _subset(dataset, [c for c in dataset.clips if c.path in test])}


def _subset(dataset, clips):
    return AudioDataset(clips, dataset.task, dataset.class_names, dataset.name)


def audio_files(root, extensions=AUDIO_EXTENSIONS, name=None):
    """Every audio file under `root` (recursively), without labels: for
    self-supervised pretraining."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"Folder not found: {root}")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in extensions and p.is_file())
    if not paths:
        raise UsageError(f"{root}: no audio files ({', '.join(extensions)}) found.")
    return AudioDataset([Clip(str(p), None) for p in paths], "unlabeled", [], name or root.name)


# --- Helpers ----------------------------------------------------------------------

def _files(folder, extensions=AUDIO_EXTENSIONS):
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"Folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in extensions)


def _read_lines(path):
    with open(_existing(path), encoding="utf-8") as f:
        return f.read().splitlines()


def _read_json(path):
    try:
        with open(_existing(path), encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise UsageError(f"{path}: not valid JSON ({error})") from None


def _read_csv(path, required):
    with open(_existing(path), encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise UsageError(f"{path}: missing columns {missing}; has {reader.fieldnames}")
        return list(reader)


def _existing(path):
    if not Path(path).is_file():
        raise UsageError(f"File not found: {path}")
    return path


def _parse_indices(text, source):
    text = text.strip()
    try:
        values = json.loads(text) if text.startswith("[") else [s for s in text.split(";") if s.strip()]
        return tuple(sorted(int(v) for v in values))
    except ValueError:
        raise UsageError(f"{source}: cannot read class indices from {text!r}") from None


# Registry -----------------------------------------------------------------------------


class DatasetReader(NamedTuple):
    read: Callable  # (root, split_names, fold, **options) -> {split name: AudioDataset}
    default_root: str | None  # a folder under the run's output folder when `data.root` is not set


READERS = Registry("dataset")


def register_dataset(name, default_root=None):
    """Registers the decorated `read(root, split_names, fold=None, **options)` as the dataset a
    recipe names with `data.dataset=name`. It returns `{split name: AudioDataset}`: the
    dataset's own splits, or those of `split_names` (the run's `(train_split, eval_split)`)
    that exist; `fold` is the cross-validation fold of `data.folds`, and `options` are
    `data.options`. With `default_root`, a run without `data.root` passes that folder
    under its output folder (a dataset the reader writes itself)."""

    def register(read):
        READERS.register(name, DatasetReader(read, default_root))
        return read

    return register


def dataset_reader(name):
    """The `DatasetReader` registered as `name`."""
    return READERS[name]


def read_dataset(name, root, split_names, fold=None, output_dir=None, **options):
    """`{split: AudioDataset}` of the registered dataset `name` (see `register_dataset`);
    `output_dir` is the run's folder, where a dataset with a `default_root` goes without `root`."""
    reader = dataset_reader(name)
    if root is None and reader.default_root and output_dir is not None:
        root = str(Path(output_dir) / reader.default_root)
    if root is None:
        raise UsageError(f"data.root is not set: point it at your copy of {name!r} "
                         f"(e.g. --set data.root=/data/{name}).")
    return reader.read(root, tuple(split_names), fold, **options)


@register_dataset("audioset")
def _read_audioset(root, split_names, fold=None, **options):
    return audioset(root, **options)


@register_dataset("esc50")
def _read_esc50(root, split_names, fold=None, test_fold=1):
    return esc50(root, test_fold=fold or test_fold)


@register_dataset("speech_commands")
def _read_speech_commands(root, split_names, fold=None, **options):
    return speech_commands(root, **options)


@register_dataset("birdset")
def _read_birdset(root, split_names, fold=None, **options):
    return birdset(root, **options)


@register_dataset("dcase2016_task2")
def _read_dcase2016_task2(root, split_names, fold=None, **options):
    return dcase2016_task2(root, **options)


@register_dataset("librispeech")
def _read_librispeech(root, split_names, fold=None, **options):
    # `data.options.splits`: split name -> LibriSpeech folder.
    folders = options.get("splits", {"train": "train-clean-100", "test": "test-clean"})
    return {split: librispeech(root, folder) for split, folder in folders.items()}


@register_dataset("folder")
def _read_folder(root, split_names, fold=None):
    return {split: folder_dataset(Path(root) / split) for split in split_names if (Path(root) / split).is_dir()}


@register_dataset("csv")
def _read_csv_splits(root, split_names, fold=None, **options):
    return {split: csv_dataset(Path(root) / f"{split}.csv", **options) for split in split_names
            if (Path(root) / f"{split}.csv").is_file()}


@register_dataset("labelled")
def _read_labelled(root, split_names, fold=None, **options):
    return labelled_dataset(root, **options)


@register_dataset("audio_files")
def _read_audio_files(root, split_names, fold=None, **options):
    return {split_names[0]: audio_files(root, **options)}
