"""Which blocks should `keras_bat.hear`'s embeddings mix, and how should a clip be pooled?

For each encoder (preset directories, e.g. the learning curve's snapshots:
step_0 is the random initialisation of the same run), each `layers` choice
(last block, mean of the blocks) and each scene pooling (class token, mean of
the timestamp embeddings), the scene embeddings of the train and test clips
of a labelled data set (`train.csv` / `test.csv`, `path,label`) come from
`keras_bat.hear`; a ridge classifier on standardised embeddings (one-hot
targets, closed form) gives the test accuracy.

    python benchmarks/learning_curve.py --seeds 0 --steps 0 1440 --probes linear --output runs/lc
    python benchmarks/hear_layers.py runs/lc/seed0/pretrain/snapshots/step_0 \\
        runs/lc/seed0/pretrain/snapshots/step_1440 --data runs/lc/data
"""

import argparse
import csv
import json
from pathlib import Path

import numpy as np


def read_split(root, split):
    from keras_bat.data.audio import load_audio

    with open(Path(root) / f"{split}.csv") as f:
        rows = list(csv.DictReader(f))
    audio = np.stack([load_audio(Path(root) / row["path"]) for row in rows])
    return audio, [row["label"] for row in rows]


def ridge_accuracy(train, train_labels, test, test_labels, regularisation=1.0):
    """Test accuracy of a closed-form ridge classifier on standardised features."""
    mean, std = train.mean(axis=0), train.std(axis=0) + 1e-6
    train, test = (train - mean) / std, (test - mean) / std
    classes = sorted(set(train_labels))
    targets = np.eye(len(classes))[[classes.index(label) for label in train_labels]]
    train = np.concatenate([train, np.ones((len(train), 1))], axis=1)
    test = np.concatenate([test, np.ones((len(test), 1))], axis=1)
    weights = np.linalg.solve(train.T @ train + regularisation * np.eye(train.shape[1]), train.T @ targets)
    predicted = [classes[i] for i in np.argmax(test @ weights, axis=1)]
    return float(np.mean([p == t for p, t in zip(predicted, test_labels)]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("encoders", nargs="+", help="preset directories (or .keras files)")
    parser.add_argument("--data", required=True, help="folder with train.csv and test.csv")
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args(argv)

    from keras_bat import hear

    train, train_labels = read_split(args.data, "train")
    test, test_labels = read_split(args.data, "test")
    results = []
    for encoder in args.encoders:
        for layers in ("last", "mean"):
            for pooling in ("cls", "mean"):
                model = hear.load_model(encoder, layers=layers, scene_pooling=pooling)
                embed = lambda audio: np.asarray(hear.get_scene_embeddings(audio, model))  # noqa: E731
                accuracy = ridge_accuracy(embed(train), train_labels, embed(test), test_labels)
                results.append({"encoder": encoder, "layers": layers, "scene_pooling": pooling, "accuracy": accuracy})
                print(f"{encoder:60s} layers={layers:5s} pooling={pooling:5s} test accuracy {accuracy:.3f}", flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
