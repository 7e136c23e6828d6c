"""Each dataset reader on a tiny replica of its standard on-disk layout."""

import json

import numpy as np
import pytest

from audio_files import tone, write
from keras_bat.data import (CharTokenizer, audio_files, audioset, balanced_sampling_weights, birdset, csv_dataset,
                            dcase2016_task2, esc50, folder_dataset, librispeech, speech_commands)


def test_audioset(tmp_path):
    ontology = [{"id": "/m/a", "name": "Speech"}, {"id": "/m/b", "name": "Music"}, {"id": "/m/c", "name": "Dog"}]
    (tmp_path / "ontology.json").write_text(json.dumps(ontology))
    header = ("# Segments csv created Sun Mar  5 10:54:31 2017\n# num_ytids=3\n"
              "# YTID, start_seconds, end_seconds, positive_labels\n")
    (tmp_path / "eval_segments.csv").write_text(
        header + 'e1, 0.000, 10.000, "/m/a,/m/b"\ne2, 30.000, 40.000, "/m/b"\ne3, 0.0, 10.0, "/m/a"\n')
    (tmp_path / "balanced_train_segments.csv").write_text(
        header + 't1, 0.000, 10.000, "/m/b,/m/c"\nt2, 0.0, 10.0, "/m/a"\n')
    for folder, names in (("eval_segments", ("Ye1", "e2")), ("balanced_train_segments", ("Yt1", "Yt2"))):
        (tmp_path / folder).mkdir()
        for name in names:
            write(tmp_path / folder / f"{name}.wav", tone(0.1))
    splits = audioset(tmp_path, "as20k")
    # Classes: names in the eval set, sorted; e3 has no file and is left out.
    assert splits["eval"].class_names == ["Music", "Speech"]
    assert [c.label for c in splits["eval"].clips] == [(0, 1), (0,)]
    assert [c.label for c in splits["train"].clips] == [(0,), (1,)]  # Dog is not an eval class
    np.testing.assert_array_equal(splits["eval"].target(splits["eval"].clips[0]), [1.0, 1.0])
    with pytest.raises(ValueError, match="as20k' or 'as2m"):
        audioset(tmp_path, "as5m")


def test_esc50_folds(tmp_path):
    (tmp_path / "meta").mkdir()
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for i in range(10):
        rows.append(f"{i}.wav,{i % 5 + 1},{i % 3},{['dog', 'rain', 'crow'][i % 3]},False,x,A")
    (tmp_path / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    splits = esc50(tmp_path, test_fold=2)
    assert len(splits["test"]) == 2 and len(splits["train"]) == 8
    assert splits["train"].class_names == ["dog", "rain", "crow"]
    assert {c.path.rsplit("/", 1)[1] for c in splits["test"].clips} == {"1.wav", "6.wav"}
    assert splits["test"].clips[0].label == 1
    with pytest.raises(ValueError, match="1 to 5"):
        esc50(tmp_path, test_fold=6)


def test_speech_commands(tmp_path):
    for word, count in (("yes", 3), ("go", 2), ("marvin", 2)):
        (tmp_path / word).mkdir()
        for i in range(count):
            write(tmp_path / word / f"s{i}_nohash_0.wav", tone(1.0))
    (tmp_path / "validation_list.txt").write_text("yes/s0_nohash_0.wav\nmarvin/s1_nohash_0.wav\n")
    (tmp_path / "testing_list.txt").write_text("go/s1_nohash_0.wav\n")
    (tmp_path / "_background_noise_").mkdir()
    write(tmp_path / "_background_noise_" / "white.wav", tone(10.5))
    splits = speech_commands(tmp_path)
    labels = {k: sorted(c.label for c in v.clips) for k, v in splits.items()}
    # 10 one-second chunks: 8 train, 1 validation, 1 test (silence = 11); marvin is unknown (10).
    assert labels["train"] == [0, 0, 9, 10] + [11] * 8
    assert labels["validation"] == [0, 10, 11]
    assert labels["test"] == [9, 11]
    silence = [c for c in splits["test"].clips if c.label == 11][0]
    assert (silence.offset, silence.duration) == (9.0, 1.0)
    assert splits["train"].num_classes == 12


def test_birdset(tmp_path):
    (tmp_path / "HSN_ebird_codes.json").write_text(json.dumps({"label2id": {"amerob": 0, "gnwtea": 2, "bkcchi": 1}}))
    (tmp_path / "train.csv").write_text('filepath,ebird_code_multilabel\na.ogg,"[0, 2]"\nb.ogg,1\n')
    (tmp_path / "test_5s.csv").write_text("filepath,ebird_code_multilabel,start_time,end_time\n"
                                          "c.ogg,1;2,5.0,10.0\nd.ogg,,0,5\n")
    splits = birdset(tmp_path)
    assert splits["train"].class_names == ["amerob", "bkcchi", "gnwtea"]
    assert [c.label for c in splits["train"].clips] == [(0, 2), (1,)]
    test = splits["test"].clips
    assert (test[0].label, test[0].offset, test[0].duration) == ((1, 2), 5.0, 5.0)
    np.testing.assert_array_equal(splits["test"].target(test[1]), [0.0, 0.0, 0.0])  # no bird in the window
    np.testing.assert_allclose(balanced_sampling_weights(splits["train"], "first"), [0.5, 0.5])


def test_dcase2016_task2_frame_targets(tmp_path):
    (tmp_path / "labelvocabulary.csv").write_text("idx,label\n0,cough\n1,door\n")
    events = {"r1.wav": [{"label": "door", "start": 100.0, "end": 500.0},
                         {"label": "cough", "start": 0.0, "end": 160.0}]}
    (tmp_path / "train.json").write_text(json.dumps(events))
    (tmp_path / "test.json").write_text(json.dumps({"r2.wav": []}))
    splits = dcase2016_task2(tmp_path)
    clip = splits["train"].clips[0]
    assert clip.path.endswith("48000/train/r1.wav")
    assert clip.label == ((0.1, 0.5, 1), (0.0, 0.16, 0))
    target = splits["train"].target(clip, time_patches=5)
    # Patch starts 0, .16, .32, .48, .64 s; active when inside [onset, offset].
    np.testing.assert_array_equal(target, [[1, 0], [1, 1], [0, 1], [0, 1], [0, 0]])
    (tmp_path / "valid.json").write_text(json.dumps({"r3.wav": [{"label": "bark", "start": 0, "end": 1}]}))
    with pytest.raises(ValueError, match="bark"):
        dcase2016_task2(tmp_path)


def test_librispeech_and_tokenizer(tmp_path):
    chapter = tmp_path / "dev-clean" / "84" / "121123"
    chapter.mkdir(parents=True)
    (chapter / "84-121123.trans.txt").write_text(
        "84-121123-0000 GO DO YOU HEAR\n84-121123-0001 BUT IN LESS THAN FIVE MINUTES\n")
    dataset = librispeech(tmp_path, "dev-clean")
    assert [c.label for c in dataset.clips] == ["GO DO YOU HEAR", "BUT IN LESS THAN FIVE MINUTES"]
    assert dataset.clips[0].path.endswith("84-121123-0000.flac")
    tokenizer = CharTokenizer()
    ids = tokenizer.encode("Don't stop!")
    assert ids == [6, 17, 16, 2, 22, 1, 21, 22, 17, 18] and tokenizer.decode(ids) == "don't stop"
    np.testing.assert_array_equal(dataset.target(dataset.clips[0])[:3], tokenizer.encode("go "))
    with pytest.raises(ValueError, match="not found"):
        librispeech(tmp_path, "train-clean-100")


def test_folder_csv_and_unlabeled(tmp_path):
    for name in ("dog", "cat"):
        (tmp_path / "pets" / name).mkdir(parents=True)
        write(tmp_path / "pets" / name / "a.wav", tone(0.1))
        (tmp_path / "pets" / name / "readme.txt").write_text("not audio")
    pets = folder_dataset(tmp_path / "pets")
    assert pets.class_names == ["cat", "dog"] and [c.label for c in pets.clips] == [0, 1]
    (tmp_path / "single.csv").write_text("path,label\npets/dog/a.wav,dog\npets/cat/a.wav,cat\n")
    single = csv_dataset(tmp_path / "single.csv")
    assert single.task == "multiclass" and [c.label for c in single.clips] == [1, 0]
    assert single.clips[0].path == str(tmp_path / "pets/dog/a.wav")
    (tmp_path / "multi.csv").write_text("path,label\na.wav,dog;cat\nb.wav,cat\n")
    multi = csv_dataset(tmp_path / "multi.csv")
    assert multi.task == "multilabel" and [c.label for c in multi.clips] == [(0, 1), (0,)]
    with pytest.raises(ValueError, match=r"not in class_names: \['cat'\]"):
        csv_dataset(tmp_path / "multi.csv", class_names=["dog", "bird"])
    unlabeled = audio_files(tmp_path / "pets")
    assert len(unlabeled) == 2 and unlabeled.task == "unlabeled"


def test_balanced_sampling_weights_inverse_frequency(tmp_path):
    (tmp_path / "multi.csv").write_text("path,label\na.wav,x\nb.wav,x\nc.wav,x;y\nd.wav,y\n")
    dataset = csv_dataset(tmp_path / "multi.csv")
    # counts x: 3, y: 2 -> per-clip mean of 1/count
    expected = np.array([1 / 3, 1 / 3, (1 / 3 + 1 / 2) / 2, 1 / 2])
    np.testing.assert_allclose(balanced_sampling_weights(dataset, "mean"), expected / expected.sum())
    first = np.array([1 / 3, 1 / 3, 1 / 3, 1 / 2])
    np.testing.assert_allclose(balanced_sampling_weights(dataset, "first"), first / first.sum())


def test_labelled_recordings_of_ones_own(tmp_path):
    from keras_bat.data.datasets import labelled_dataset, read_dataset

    for name, count in (("dog", 10), ("rain", 5), ("siren", 2)):
        (tmp_path / "sounds" / name / "day1").mkdir(parents=True)
        for i in range(count):  # searched recursively inside each class folder
            write(tmp_path / "sounds" / name / ("day1" if i % 2 else "") / f"{name}{i}.wav", tone(0.1))
    splits = read_dataset("labelled", str(tmp_path / "sounds"), ("train", "test"))
    assert splits["train"].class_names == ["dog", "rain", "siren"] and splits["train"].task == "multiclass"
    tested = [np.bincount([c.label for c in splits[s].clips], minlength=3).tolist() for s in ("train", "test")]
    assert tested == [[8, 4, 1], [2, 1, 1]]  # a fifth of each class, at least one of each
    assert not {c.path for c in splits["train"].clips} & {c.path for c in splits["test"].clips}
    # The same files go to the same split wherever the folder lies, and another seed draws others.
    (tmp_path / "sounds").rename(tmp_path / "moved")
    moved = labelled_dataset(tmp_path / "moved")
    assert [c.path.replace("/moved/", "/sounds/") for c in moved["test"].clips] == \
        [c.path for c in splits["test"].clips]
    assert {c.path for c in labelled_dataset(tmp_path / "moved", seed=1)["test"].clips} != \
        {c.path for c in moved["test"].clips}
    # A folder with train/ and test/ keeps them.
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / "given" / split / name).mkdir(parents=True)
            write(tmp_path / "given" / split / name / "x.wav", tone(0.1))
    given = labelled_dataset(tmp_path / "given")
    assert [len(given[s]) for s in ("train", "test")] == [2, 2] and given["test"].class_names == ["a", "b"]
    # A CSV, with a split column or split by class.
    rows = "path,label,split\n" + "".join(f"moved/dog/dog{i}.wav,{'dog' if i % 2 else 'dog;rain'},"
                                          f"{'test' if i < 2 else 'train'}\n" for i in range(0, 10, 2))
    (tmp_path / "labels.csv").write_text(rows)
    from_csv = labelled_dataset(tmp_path / "labels.csv")
    assert from_csv["train"].task == "multilabel" and [len(from_csv[s]) for s in ("train", "test")] == [4, 1]


@pytest.mark.parametrize("make, message", [
    (lambda root: (root / "labels.csv").write_text("path,label\na.wav,dog\nb.wav,cat\na.wav,cat\n"),
     "listed more than once: \\['a.wav'\\]"),
    (lambda root: (root / "labels.csv").write_text("path,label,split\na.wav,dog,train\nb.wav,cat,valid\n"),
     "split column takes train or test"),
    (lambda root: (root / "labels.csv").write_text("file,tag\na.wav,dog\n"), "missing columns"),
    (lambda root: (root / "sounds" / "dog").mkdir(parents=True), "hold no audio files"),
    (lambda root: (root / "sounds").mkdir(), "one sub-folder of audio files per class"),
])
def test_labelled_recordings_with_mistakes(tmp_path, make, message):
    from keras_bat.data.datasets import labelled_dataset

    make(tmp_path)
    source = tmp_path / "labels.csv" if (tmp_path / "labels.csv").exists() else tmp_path / "sounds"
    with pytest.raises(ValueError, match=message):
        labelled_dataset(source)
