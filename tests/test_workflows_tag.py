"""Labels and events in one call (`AudioTagger`, `keras-bat tag`): streamed results equal those of
the whole clip (`predict_long`), events equal a median filter and thresholds applied to the whole
clip's frame probabilities, and a bad file never stops a run or loses the others' rows."""

import csv
import json

import keras
import numpy as np
import pytest
from audio_files import bad_files, write
from helpers import to_numpy

from keras_bat.cli import main
from keras_bat.heads import CGP, LinearHead, VQTHead
from keras_bat.layers import LogMelSpectrogram
from keras_bat.models import AudioClassifier, BATBackbone, RecordingStream
from keras_bat.workflows.tag import AudioTagger, EventDecoder

LABELS = ["bird", "rain", "siren"]


def small_model(head, task, num_query_tokens=0, labels=LABELS):
    keras.utils.set_random_seed(0)
    backbone = BATBackbone(dim=32, depth=2, num_heads=2, chunk_time_patches=4, num_query_tokens=num_query_tokens)
    return AudioClassifier(backbone, head, frontend=LogMelSpectrogram(), task=task, label_names=labels)


def sound(seconds, seed=0):
    """Noise with a tone in its second quarter: a recording whose frames differ."""
    rng = np.random.default_rng(seed)
    samples = (0.1 * rng.normal(size=int(seconds * 16000))).astype("float32")
    start, stop = len(samples) // 4, len(samples) // 2
    samples[start:stop] += 0.5 * np.sin(0.2 * np.arange(stop - start)).astype("float32")
    return samples


def whole_clip_outputs(model, waveform):
    """`predict_long` on the whole clip's spectrogram, its frames cut to whole patches as the
    streamed path cuts them."""
    frames, padded = RecordingStream(model.backbone, model.frontend).layout(len(waveform))
    whole = type(model.frontend).from_config({**model.frontend.get_config(), "time_frames": None})
    spectrogram = to_numpy(whole(waveform[None]))[:, :frames]
    spectrogram = np.pad(spectrogram, [(0, 0), (0, padded - frames), (0, 0)])
    return model.predict_long(spectrogram)[0]


def reference_events(probabilities, thresholds, window):
    """Events from a whole clip's frame probabilities: scipy's median filter, then runs at or
    above each class's threshold, scored by their highest unfiltered probability."""
    from scipy.ndimage import median_filter

    filtered = median_filter(probabilities, size=(window, 1), mode="nearest")
    events = []
    for label in range(probabilities.shape[1]):
        active = np.r_[False, filtered[:, label] >= thresholds[label], False].astype(int)
        changes = np.flatnonzero(np.diff(active))
        for first, end in zip(changes[::2], changes[1::2]):
            events.append((first, end, label, probabilities[first:end, label].max()))
    return sorted(events)


def thresholds_between(probabilities):
    """Per class, a threshold near the median that lies in the widest gap between the frames' values,
    so that no frame sits on it (the streamed and the whole-clip probabilities differ by ~1e-6)."""
    thresholds = []
    for values in np.sort(probabilities, axis=0).T:
        middle = len(values) // 2
        k = max(range(max(1, middle - 4), min(len(values), middle + 5)), key=lambda i: values[i] - values[i - 1])
        assert values[k] - values[k - 1] > 1e-4
        thresholds.append((values[k] + values[k - 1]) / 2)
    return np.array(thresholds)


@pytest.mark.parametrize("window", [1, 3, 7])
def test_streamed_event_decoding_equals_the_whole_clip(window):
    rng = np.random.default_rng(window)
    for trial in range(20):
        frames = int(rng.integers(1, 60))
        probabilities = rng.uniform(size=(frames, 3)).astype("float32")
        thresholds = rng.uniform(0.3, 0.7, size=3)
        decoder, events = EventDecoder(thresholds, window), []
        start = 0
        while start < frames:  # blocks of every size, one frame included
            stop = start + int(rng.integers(1, 9))
            events += decoder.add(probabilities[start:stop])
            start = stop
        events += decoder.finish()
        expected = reference_events(probabilities, thresholds, window)
        assert [e[:3] for e in sorted(events)] == [e[:3] for e in expected], (trial, frames)
        np.testing.assert_allclose([e[3] for e in sorted(events)], [e[3] for e in expected], rtol=1e-6)
    with pytest.raises(ValueError, match="odd number of frames"):
        EventDecoder([0.5], 4)


@pytest.mark.parametrize("labels, by_name", [(LABELS, False), (["siren", "bird", "rain"], True)],
                         ids=["sorted labels, a list", "unsorted labels, label=value"])
def test_events_equal_those_of_the_whole_clip_frame_probabilities(tmp_path, labels, by_name):
    model = small_model(CGP(3, 8, "frame"), "frame", labels=labels)
    waveform = sound(9.3)
    path = write(tmp_path / "field.wav", waveform, subtype="FLOAT")
    probabilities = 1 / (1 + np.exp(-whole_clip_outputs(model, waveform).astype("float64")))
    thresholds = thresholds_between(probabilities)  # events of every class
    given = {labels[i]: thresholds[i] for i in (2, 0, 1)} if by_name else list(thresholds)  # a dict in any order
    tagger = AudioTagger(model, thresholds=given, median_filter=0.5, batch_size=3)
    assert tagger.median_window == 3  # 0.5 s of 0.16 s patches
    result = tagger(path)
    assert result["status"] == "ok" and result["seconds"] == pytest.approx(9.3)
    expected = reference_events(probabilities, thresholds, 3)
    assert len(expected) > 6
    found = sorted((round(e["onset"] / 0.16), e["label"], e["score"], e["offset"]) for e in result["events"])
    assert [(first, labels[label]) for first, _, label, _ in sorted(expected, key=lambda e: (e[0], labels[e[2]]))] \
        == [(first, label) for first, label, _, _ in found]
    by_start = {(first, labels[label]): (end, score) for first, end, label, score in expected}
    for first, label, score, offset in found:
        end, expected_score = by_start[(first, label)]
        assert offset == pytest.approx(min(end * 0.16, 9.3))
        assert score == pytest.approx(expected_score, abs=2e-5)
    # Clip scores: each class's highest frame probability, best first.
    peaks = probabilities.max(axis=0)
    assert [entry["label"] for entry in result["labels"]] == [labels[i] for i in np.argsort(-peaks, kind="stable")]
    np.testing.assert_allclose([entry["score"] for entry in result["labels"]], np.sort(peaks)[::-1], atol=2e-5)


@pytest.mark.parametrize("name", ["cgp_multiclass", "linear_multilabel", "vqt"])
def test_clip_labels_equal_the_whole_clip_at_any_rate_and_channel_count(name, tmp_path):
    head, task, queries = {"cgp_multiclass": (CGP(3, 8), "multiclass", 0),
                           "linear_multilabel": (LinearHead(3, "mean"), "multilabel", 0),
                           "vqt": (VQTHead(3, depth=2, dim=32, num_query_tokens=2), "multiclass", 2)}[name]
    model = small_model(head, task, queries)
    waveform = sound(5.1, seed=1)
    logits = whole_clip_outputs(model, waveform).astype("float64")
    if task == "multiclass":
        expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    else:
        expected = 1 / (1 + np.exp(-logits))
    tagger = AudioTagger(model, top_k=2)
    result = tagger(waveform, sample_rate=16000)
    assert "events" not in result
    order = np.argsort(-expected, kind="stable")[:2]
    assert [entry["label"] for entry in result["labels"]] == [LABELS[i] for i in order]
    np.testing.assert_allclose([entry["score"] for entry in result["labels"]], expected[order], atol=2e-5)
    # Stereo at 44.1 kHz, as an array either way round and as a file: one result.
    from keras_bat.data.audio import resample

    stereo = np.stack([resample(waveform, 16000, 44100)] * 2)
    as_rows = tagger(stereo, sample_rate=44100)
    as_columns = tagger(stereo.T, sample_rate=44100)
    from_file = tagger(write(tmp_path / "stereo.wav", stereo.T, 44100, subtype="FLOAT"))
    assert from_file["seconds"] == pytest.approx(5.1)
    for other in (as_columns, from_file):
        assert [e["label"] for e in other["labels"]] == [e["label"] for e in as_rows["labels"]]
        np.testing.assert_allclose([e["score"] for e in other["labels"]], [e["score"] for e in as_rows["labels"]],
                                   atol=1e-4)


@pytest.mark.parametrize("task", ["multiclass", "frame"])
def test_clip_length_policy_short_clips_as_in_training_long_ones_whole(task):
    """A model trained on 2.56 s clips (`time_frames=256`): a shorter recording is zero-padded to
    2.56 s as in training, so it gets `model(waveform)`'s scores; a longer one is streamed whole,
    not cropped to 2.56 s as `model(waveform)` crops it."""
    model = small_model(CGP(3, 8, "frame" if task == "frame" else "mean"), task)
    model = AudioClassifier(model.backbone, model.head, frontend=LogMelSpectrogram(time_frames=256), task=task,
                            label_names=LABELS)
    tagger = AudioTagger(model, top_k=3, batch_size=2)
    short, long = sound(1.5, seed=2), sound(6.1, seed=3)
    called = to_numpy(model.probabilities(model(short[None])))[0].astype("float64")
    if task == "frame":  # the clip score of a class: its highest probability over the clip's own 10 patches
        assert called.shape == (16, 3)
        called = called[:10].max(axis=0)
    scores = {entry["label"]: entry["score"] for entry in tagger(short, sample_rate=16000)["labels"]}
    np.testing.assert_allclose([scores[name] for name in LABELS], called, atol=2e-5)

    whole = whole_clip_outputs(model, long).astype("float64")
    cropped = to_numpy(model.probabilities(model(long[None])))[0].astype("float64")
    expected = to_numpy(model.probabilities(whole)).astype("float64")
    if task == "frame":
        expected, cropped = expected.max(axis=0), cropped.max(axis=0)
    scores = {entry["label"]: entry["score"] for entry in tagger(long, sample_rate=16000)["labels"]}
    np.testing.assert_allclose([scores[name] for name in LABELS], expected, atol=2e-5)
    assert np.abs(expected - cropped).max() > 1e-3  # streaming whole is not the crop


def test_bad_inputs_fail_alone_with_their_reason(tmp_path):
    tagger = AudioTagger(small_model(CGP(3, 8), "multiclass"))
    files = bad_files(tmp_path / "bad")
    good = write(tmp_path / "good.wav", sound(2.0))
    results = tagger([files["empty file"], good, files["not audio"], files["file not found"]])
    assert [r["status"] for r in results] == ["failed", "ok", "failed", "failed"]
    assert [r["detail"] for r in results] == ["empty file", "", "not a readable audio file", "file not found"]
    assert len(results[1]["labels"]) == 3
    with pytest.raises(ValueError, match="needs its sample_rate"):
        tagger(sound(1.0))
    with pytest.raises(ValueError, match="Events need a frame-level head"):
        tagger(good, events=True)
    with pytest.raises(ValueError, match="unknown labels"):
        AudioTagger(tagger.model, thresholds={"thunder": 0.2})
    with pytest.raises(ValueError, match="top_k must be a whole number"):
        AudioTagger(tagger.model, top_k=0)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.filterwarnings("error::tqdm.TqdmWarning")  # the progress bar never passes its total
def test_tag_command_writes_every_file_and_resumes(tmp_path, capsys, monkeypatch):
    model = small_model(CGP(3, 8, "frame"), "frame")
    model.save_to_preset(tmp_path / "preset")
    folder = tmp_path / "recordings"
    (folder / "day2").mkdir(parents=True)
    write(folder / "a.wav", sound(3.0, seed=2))
    write(folder / "day2" / "b.flac", sound(4.0, seed=3))
    (folder / "c.wav").write_text("not audio at all\n" * 20)
    output = tmp_path / "results.csv"
    arguments = ["tag", str(folder), "--model", str(tmp_path / "preset"), "--top-k", "2", "--events",
                 "--threshold", "bird=0.1", "--output", str(output)]
    assert main(arguments) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["files"] == 3 and summary["tagged"] == 2
    assert summary["failed"] == [{"path": str(folder / "c.wav"), "reason": "not a readable audio file"}]
    rows = read_rows(output)
    assert [row["path"] for row in rows if row["kind"] == "clip"] == [str(folder / "a.wav")] * 2 + [
        str(folder / "day2" / "b.flac")] * 2
    assert {row["label"] for row in rows if row["kind"] == "clip"} <= set(LABELS)
    failed = [row for row in rows if row["status"] == "failed"]
    assert [(row["path"], row["detail"]) for row in failed] == [(str(folder / "c.wav"), "not a readable audio file")]
    events = [row for row in rows if row["kind"] == "event"]
    assert {row["label"] for row in events} >= {"bird"}  # its threshold under every probability
    assert all(0 <= float(row["onset"]) < float(row["offset"]) <= float(row["seconds"]) for row in events)
    assert not (tmp_path / "results.csv.partial").exists()

    # A run killed after its first file: the rerun keeps that file's rows and tags the others.
    json_output = tmp_path / "results.json"
    first = AudioTagger(model, top_k=2).tag_one(str(folder / "a.wav"), events=True)
    identity_run = ["tag", str(folder), "--model", str(tmp_path / "preset"), "--top-k", "2", "--events",
                    "--output", str(json_output)]
    tag_one, calls = AudioTagger.tag_one, []

    def interrupted_at_the_second_file(self, *args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return tag_one(self, *args, **kwargs)

    monkeypatch.setattr(AudioTagger, "tag_one", interrupted_at_the_second_file)
    with pytest.raises(KeyboardInterrupt):
        main(identity_run)
    monkeypatch.setattr(AudioTagger, "tag_one", tag_one)
    partial = (tmp_path / "results.json.partial").read_text().splitlines()
    assert [json.loads(line)["source"] for line in partial] == [str(folder / "a.wav")]
    assert main(identity_run) == 0
    results = json.loads(json_output.read_text())
    assert [r["source"] for r in results] == [str(folder / "a.wav"), str(folder / "c.wav"),
                                              str(folder / "day2" / "b.flac")]
    assert results[0]["labels"] == first["labels"] and results[1]["status"] == "failed"
    assert json.loads(capsys.readouterr().out)["resumed_after"] == 1
    # Finished output: refused unless --overwrite.
    with pytest.raises(FileExistsError, match="--overwrite"):
        main(identity_run)
    assert main(identity_run + ["--overwrite"]) == 0


def test_tag_command_errors_in_one_line(tmp_path, capsys):
    from keras_bat.cli import run_parsed
    from keras_bat.cli import parse

    clip_model = small_model(CGP(3, 8), "multiclass")
    clip_model.save_to_preset(tmp_path / "clip_preset")
    write(tmp_path / "a.wav", sound(1.0))
    cases = [
        (["--model", str(tmp_path / "clip_preset"), "--events"], "--events needs a frame-level head"),
        (["--model", str(tmp_path / "nowhere")], "nowhere"),
        (["--model", str(tmp_path / "clip_preset"), "--output", str(tmp_path / "r.txt")], "must end in .csv or .json"),
    ]
    for extra, message in cases:
        arguments = ["tag", str(tmp_path / "a.wav"), "--output", str(tmp_path / "r.csv"), *extra]
        assert run_parsed(parse(arguments)) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and message in error[0], error
