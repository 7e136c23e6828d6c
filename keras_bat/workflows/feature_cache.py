"""Probe feature cache: a frozen encoder's features of every clip, computed
once and memory-mapped from disk in bfloat16, so that probes (and sweeps of
them) train without running the encoder again.

What is stored follows the head: class tokens of every block for linear,
layer-mixed and Head2Toe probes on `pooling="cls"`; every token of every block
for CGP and the rest. Clips are encoded with the evaluation clip handling (cut
or padded from the start), so a cached probe sees one fixed crop per clip.
"""

import hashlib
import json
from pathlib import Path

import keras
import numpy as np

from keras_bat.data.pipeline import ClipLoader, ordered_batches
from keras_bat.errors import UsageError
from keras_bat.models.streaming import ChunkEncoder, SelectOutputs, encode_whole_clips

META_FILE = "cache.json"


def to_bfloat16_bits(x):
    """float32 -> bfloat16 (round to nearest even), as uint16 bit patterns."""
    bits = np.ascontiguousarray(x, dtype="float32").view("uint32")
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("uint16")


def from_bfloat16_bits(bits):
    return (np.asarray(bits).astype("uint32") << 16).view("float32")


def feature_shapes(backbone, time_frames, tokens):
    """Per-clip shapes of the cached features: `{"cls_tokens": (L, D)}` and,
    with `tokens="all"`, `"patch_tokens": (L, T, F, D)`."""
    shapes = {"cls_tokens": (backbone.depth, backbone.dim)}
    if tokens == "all":
        grid = (time_frames // backbone.patch_size, backbone.num_mels // backbone.patch_size)
        shapes["patch_tokens"] = (backbone.depth, *grid, backbone.dim)
    elif tokens != "cls":
        raise UsageError(f"`tokens` must be 'cls' or 'all'. Received: {tokens!r}")
    return shapes


def estimate_bytes(num_clips, backbone, time_frames, tokens):
    """Disk size of a cache in bytes (bfloat16: 2 bytes per value)."""
    return 2 * num_clips * sum(int(np.prod(s)) for s in feature_shapes(backbone, time_frames, tokens).values())


def cache_source(backbone, frontend, dataset, clip_seconds, tokens):
    """What a cache was computed from: the encoder's weights (a hash), the
    frontend length, the clips (files, segments and labels) and what is stored. A cache is reused only
    when all of these are the same."""
    weights = hashlib.sha1()
    for variable in backbone.weights:
        weights.update(np.ascontiguousarray(keras.ops.convert_to_numpy(variable)).tobytes())
    return {"encoder": weights.hexdigest(), "time_frames": frontend.time_frames, "clip_seconds": clip_seconds,
            "dataset": dataset.name,
            "clips": hashlib.sha1("\n".join(repr((c.path, c.offset, c.duration, c.label))
                                               for c in dataset.clips).encode()).hexdigest(),
            "tokens": tokens}


class FeatureCache:
    """Features and targets of one dataset split, memory-mapped from `folder`.

    Build with `FeatureCache.build(...)`, reopen with `FeatureCache(folder)`;
    `dataset(batch_size)` feeds `model.fit` on every backend.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        meta_path = self.folder / META_FILE
        if not meta_path.exists():
            raise UsageError(f"{self.folder} holds no feature cache ({META_FILE} missing).")
        self.meta = json.loads(meta_path.read_text())
        self.features = {name: np.load(self.folder / f"{name}.npy", mmap_mode="r")[:self.meta["clips"]]
                         for name in self.meta["shapes"]}
        self.targets = np.load(self.folder / "targets.npy")

    def __len__(self):
        return len(self.targets)

    @classmethod
    def build(cls, folder, backbone, frontend, dataset, clip_seconds, tokens="all", budget_gb=50.0,
              batch_size=16, num_workers=4, skipped=None, verbose=True):
        """Encodes every clip of `dataset` once and writes the cache.

        Raises:
            ValueError: when the estimated size exceeds `budget_gb`, before
                anything is computed.
        """
        folder = Path(folder)
        size = estimate_bytes(len(dataset), backbone, frontend.time_frames, tokens)
        if size > budget_gb * 1e9:
            raise UsageError(f"A feature cache of {dataset.name} would take {size / 1e9:.1f} GB (> budget "
                             f"{budget_gb} GB); raise the budget or probe without the cache.")
        folder.mkdir(parents=True, exist_ok=True)
        shapes = feature_shapes(backbone, frontend.time_frames, tokens)
        arrays = {name: np.lib.format.open_memmap(folder / f"{name}.npy", "w+", "uint16", (len(dataset), *shape))
                  for name, shape in shapes.items()}
        loader = ClipLoader(dataset, clip_seconds, training=False, patch_seconds=backbone.seconds_per_patch(frontend))
        encoder = ChunkEncoder(backbone, SelectOutputs(shapes))
        kept, targets = [], []
        for indices, waveforms, batch_targets in ordered_batches(
                loader, batch_size, num_workers, skipped, desc=f"caching {dataset.name}" if verbose else None):
            features = encode_whole_clips(encoder, frontend(keras.ops.convert_to_tensor(waveforms)))
            row = len(kept)
            for name in shapes:
                arrays[name][row:row + len(indices)] = to_bfloat16_bits(keras.ops.convert_to_numpy(features[name]))
            kept += indices
            targets += batch_targets
        for array in arrays.values():
            array.flush()
        # Rows are filled in order; those past `clips` (skipped files) stay unused.
        np.save(folder / "targets.npy", np.stack(targets))
        meta = {"shapes": {k: list(v) for k, v in shapes.items()}, "tokens": tokens, "clips": len(kept),
                "dataset": dataset.name, "task": dataset.task, "bytes": size, "clip_indices": kept,
                "source": cache_source(backbone, frontend, dataset, clip_seconds, tokens)}
        (folder / META_FILE).write_text(json.dumps(meta))
        return cls(folder)

    @classmethod
    def open_or_build(cls, folder, backbone, frontend, dataset, clip_seconds, tokens="all", **build_options):
        """The cache in `folder` when it was computed from the same encoder
        weights, frontend, clips and tokens; otherwise a new one (see `build`)."""
        try:
            cache = cls(folder)
            if cache.meta.get("source") == cache_source(backbone, frontend, dataset, clip_seconds, tokens):
                return cache
        except ValueError:
            pass
        return cls.build(folder, backbone, frontend, dataset, clip_seconds, tokens, **build_options)

    def batch(self, indices):
        """Features (float32) and targets of the given rows."""
        indices = np.sort(np.asarray(indices))
        features = {name: from_bfloat16_bits(array[indices]) for name, array in self.features.items()}
        return features, self.targets[indices]

    def dataset(self, batch_size, shuffle=True, steps_per_epoch=None, seed=0, start_batch=0):
        """Batches `(features, targets)` for `fit` / `predict`: one pass over
        the cache per epoch, or `steps_per_epoch` batches of an endless
        stream of passes (reshuffled each pass), from its batch `start_batch`
        on (a resumed run's position)."""
        return _CacheBatches(self, batch_size, shuffle, steps_per_epoch, seed, start_batch)


class _CacheBatches(keras.utils.PyDataset):
    def __init__(self, cache, batch_size, shuffle, steps_per_epoch, seed, start_batch=0):
        super().__init__()
        self.cache, self.batch_size, self.shuffle = cache, batch_size, shuffle
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        self.start_batch = start_batch
        self.batches_per_pass = -(-len(cache) // batch_size) if not shuffle else len(cache) // batch_size
        if self.batches_per_pass == 0:
            raise UsageError(f"The cache holds {len(cache)} clips, fewer than one batch of {batch_size}.")
        self.epoch = 0

    def __len__(self):
        return self.steps_per_epoch or self.batches_per_pass

    def _order(self, index):
        if not self.shuffle:
            return np.arange(len(self.cache))
        return np.random.default_rng([self.seed, index]).permutation(len(self.cache))

    def __getitem__(self, index):
        position = self.start_batch + self.epoch * len(self) + index  # batches since the stream's start
        shuffle_pass, batch = divmod(position, self.batches_per_pass)
        order = self._order(shuffle_pass)
        return self.cache.batch(order[batch * self.batch_size:(batch + 1) * self.batch_size])

    def on_epoch_end(self):
        self.epoch += 1
