"""Input pipelines from an `AudioDataset` to batches for `model.fit`.

Two engines share one clip loader: tf.data (`engine="tf"`, the default; usable
with `fit` on every Keras backend) and grain (`engine="grain"`). Files that
cannot be decoded are skipped and counted (`SkippedFiles`), so that one bad
file never stops a long run.
"""

import bisect
import collections
import concurrent.futures
import functools
import importlib.util
import itertools
import sys
import threading

import keras
import numpy as np
from tqdm.auto import tqdm

from keras_bat.data.audio import PATCH_SECONDS, SAMPLE_RATE, AudioDecodeError, load_audio
from keras_bat.errors import UsageError
from keras_bat.runtime import import_tensorflow


class SkippedFiles:
    """Thread-safe record of the files a pipeline skipped, with reasons."""

    def __init__(self):
        self._lock = threading.Lock()
        self.files = []  # (path, reason)

    def record(self, error):
        with self._lock:
            self.files.append((error.path, error.reason))

    def counts(self):
        with self._lock:
            return dict(collections.Counter(reason for _, reason in self.files))

    def __len__(self):
        with self._lock:
            return len(self.files)


class SkippedFilesLogger(keras.callbacks.Callback):
    """Adds `skipped_files` (the running total) to the epoch logs, so that
    CSV and TensorBoard logs show it, and prints new skips with their reasons."""

    def __init__(self, skipped, verbose=True):
        super().__init__()
        self.skipped = skipped
        self.verbose = verbose
        self._reported = 0

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["skipped_files"] = float(len(self.skipped))
        new = self.skipped.files[self._reported:]
        self._reported += len(new)
        if self.verbose and new:
            for path, reason in new[:10]:
                print(f"skipped {path}: {reason}")
            if len(new) > 10:
                print(f"... and {len(new) - 10} more; totals by reason: {self.skipped.counts()}")


class ClipLoader:
    """Decodes a clip of a dataset and brings it to a fixed length.

    Training clips are rolled by a random amount, then zero-padded (and rolled
    again within the padding) or cropped at a random offset; evaluation clips
    are padded or cut from the start. This is the reference's clip handling.

    Args:
        dataset: `AudioDataset`.
        clip_seconds: float, length of every output waveform.
        training: bool, random (True) or fixed (False) clip handling.
        sample_rate: int. Defaults to 16000.
        noise_std: float, Gaussian noise added in training (0.02 for the
            reference's HSN recipe). Defaults to `0.0`.
        patch_seconds: float, time patch length for frame targets. Defaults to BAT's, `0.16`.
        max_label_length: int, CTC labels are padded or cut to this length.
        decoder: `"soundfile"` or `"tfio"` (see `load_audio`).
    """

    def __init__(self, dataset, clip_seconds, training, sample_rate=SAMPLE_RATE, noise_std=0.0,
                 patch_seconds=PATCH_SECONDS, max_label_length=400, decoder="soundfile"):
        if clip_seconds <= 0:
            raise UsageError(f"`clip_seconds` must be positive. Received: {clip_seconds}")
        self.dataset = dataset
        self.clip_samples = int(round(clip_seconds * sample_rate))
        self.training = training
        self.sample_rate = sample_rate
        self.noise_std = noise_std
        self.patch_seconds = patch_seconds
        self.time_patches = int(round(clip_seconds / patch_seconds))
        self.max_label_length = max_label_length
        self.decoder = decoder

    def __call__(self, index, seed=0):
        """Returns `(waveform, target)`; raises `AudioDecodeError` for bad files."""
        clip = self.dataset.clips[int(index)]
        rng = np.random.default_rng(int(seed))
        waveform = load_audio(clip.path, self.sample_rate, clip.offset, clip.duration, decoder=self.decoder)
        waveform = self.fit_length(waveform, rng)
        if self.training and self.noise_std > 0:
            waveform = waveform + rng.normal(0.0, self.noise_std, waveform.shape).astype("float32")
        return waveform, self.target(clip)

    def fit_length(self, waveform, rng):
        n = self.clip_samples
        if self.training:
            waveform = np.roll(waveform, rng.integers(len(waveform)))
        if len(waveform) < n:
            padding = n - len(waveform)
            waveform = np.pad(waveform, (0, padding))
            if self.training:
                waveform = np.roll(waveform, rng.integers(padding + 1))
        elif len(waveform) > n:
            start = rng.integers(len(waveform) - n + 1) if self.training else 0
            waveform = waveform[start:start + n]
        return waveform.astype("float32")

    def target(self, clip):
        target = self.dataset.target(clip, self.time_patches, self.patch_seconds)
        if self.dataset.task == "ctc":
            labels = np.zeros(self.max_label_length, "int32")
            labels[:min(len(target), self.max_label_length)] = target[:self.max_label_length]
            return {"labels": labels, "label_lengths": np.int32(min(len(target), self.max_label_length))}
        return target



class Sampler:
    """The order of clips per epoch: a shuffle, or `samples_per_epoch` clips
    drawn without replacement with the given weights (class-balanced sampling),
    or the dataset order for evaluation.

    Args:
        num_clips: int.
        shuffle: bool. Defaults to `True`.
        weights: optional array `(num_clips,)`, e.g. `balanced_sampling_weights`.
        samples_per_epoch: int, clips per epoch with weights (default: all).
        seed: int.
    """

    def __init__(self, num_clips, shuffle=True, weights=None, samples_per_epoch=None, seed=0):
        if num_clips == 0:
            raise UsageError("The dataset has no clips.")
        self.num_clips = num_clips
        self.shuffle = shuffle
        self.weights = None if weights is None else np.asarray(weights, "float64") / np.sum(weights)
        self.samples_per_epoch = min(samples_per_epoch or num_clips, num_clips)
        self.seed = seed

    def order(self, epoch):
        """`(indices, seeds)` of one epoch; each clip gets its own random seed."""
        rng = np.random.default_rng([self.seed, epoch])
        if self.weights is not None:
            indices = rng.choice(self.num_clips, self.samples_per_epoch, replace=False, p=self.weights)
        elif self.shuffle:
            indices = rng.permutation(self.num_clips)
        else:
            indices = np.arange(self.num_clips)
        return indices.astype("int64"), rng.integers(0, 2**31 - 1, len(indices), dtype="int64")


class StreamPosition:
    """Where a training stream stands, for exact resumption.

    The clips of a stream are numbered in stream order (the sampler's epochs
    one after the other); a batch is made of the next `batch_size` clips that
    decode. The pipeline records the clips that did not, so that the position
    after any number of batches is known, and a run restarted there sees the
    same batches as one that never stopped. With a `shard` (one process of
    several), the process reads only its positions of the stream and its
    batches are its part of each global batch of `global_batch_size`.

    Args:
        batch_size: int, the batches this stream yields.
        start: int, the position of the stream's first clip. Defaults to `0`.
        shard: optional `ProcessShard`.
    """

    def __init__(self, batch_size, start=0, shard=None):
        self.batch_size = batch_size
        self.start = int(start)
        self.shard = shard
        self._lock = threading.Lock()
        self._undecoded = []  # positions, ascending

    @property
    def global_batch_size(self):
        return self.batch_size * (self.shard.count if self.shard else 1)

    def position(self, count):
        """The stream position of this stream's `count`-th own clip (0: the first at or after `start`)."""
        if self.shard is None or self.shard.count == 1:
            return self.start + count
        size, local, index = self.global_batch_size, self.batch_size, self.shard.index
        base = self.start - self.start % size
        before = min(max(self.start - base - index * local, 0), local)  # own clips of the first batch before start
        batches, within = divmod(before + count, local)
        return base + batches * size + index * local + within

    def positions(self):
        """This stream's own positions from `start` on, without end."""
        return (self.position(count) for count in itertools.count())

    def record_undecoded(self, position):
        # Keras may read the first batches twice (a second iterator to build the model): record each clip once.
        with self._lock:
            i = bisect.bisect_left(self._undecoded, int(position))
            if i == len(self._undecoded) or self._undecoded[i] != position:
                self._undecoded.insert(i, int(position))

    def after(self, batches):
        """The position of the clip that follows `batches` batches."""
        count = batches * self.batch_size
        with self._lock:
            for undecoded in self._undecoded[bisect.bisect_left(self._undecoded, self.start):]:
                if undecoded >= self.position(count):
                    break
                count += 1
        return self.position(count)


def make_pipeline(dataset, batch_size, clip_seconds, training=True, engine="tf", repeat=False,
                  weights=None, samples_per_epoch=None, noise_std=0.0, num_workers=4, seed=0,
                  skipped=None, max_label_length=400, with_targets=True, decoder="soundfile", stream=None,
                  patch_seconds=PATCH_SECONDS):
    """Batches of `(waveforms (batch, samples), targets)` from a dataset.

    Args:
        dataset: `AudioDataset`.
        batch_size: int.
        clip_seconds: float, waveform length.
        training: bool, shuffle and random clip handling (and drop the last
            short batch). Defaults to `True`.
        engine: `"tf"` (tf.data) or `"grain"`. Defaults to `"tf"`.
        repeat: bool, loop over epochs without end (use `steps_per_epoch`
            in `fit`). Defaults to `False`.
        weights, samples_per_epoch: class-balanced sampling (see `Sampler`).
        noise_std: float, Gaussian noise in training (HSN).
        num_workers: int, parallel decoding threads (0: one clip at a time). Defaults to 4.
        seed: int.
        skipped: `SkippedFiles` that records bad files (a new one if `None`;
            read it back as `pipeline.skipped` for grain, or pass your own).
        max_label_length: int, for CTC.
        patch_seconds: float, the encoder's time patch, the grid of frame targets. Defaults to 0.16.
        with_targets: bool, `False` yields waveforms only (pretraining).
        decoder: `"soundfile"` or `"tfio"` (tensorflow-io's decoders, from
            the `[tfio]` stack).
        stream: optional `StreamPosition`: the stream starts at its `start`
            and records the clips that do not decode (training resumption,
            see `keras_bat.training.fit_resumable`); with its `shard`, the
            pipeline reads one process's part of each batch of `batch_size`
            and yields batches of `batch_size / processes`.

    Returns:
        `tf.data.Dataset` or grain `IterDataset`, ready for `model.fit`.
    """
    loader = ClipLoader(dataset, clip_seconds, training, noise_std=noise_std, max_label_length=max_label_length,
                        decoder=decoder, patch_seconds=patch_seconds)
    sampler = Sampler(len(dataset), shuffle=training, weights=weights, samples_per_epoch=samples_per_epoch,
                      seed=seed)
    skipped = SkippedFiles() if skipped is None else skipped
    stream = StreamPosition(batch_size) if stream is None else stream
    if stream.global_batch_size != batch_size:
        raise UsageError(f"The stream's batches of {stream.batch_size} on each of "
                         f"{stream.global_batch_size // stream.batch_size} processes do not make the batch of "
                         f"{batch_size}.")
    batch_size = stream.batch_size  # this process's part
    if engine == "tf":
        data = _tf_pipeline(loader, sampler, batch_size, training, repeat, num_workers, skipped, stream)
        return data if with_targets else data.map(_waveforms_only)
    if engine == "grain":
        data = _grain_pipeline(loader, sampler, batch_size, training, repeat, num_workers, skipped, stream)
        return data if with_targets else data.map(lambda batch: batch[0])
    raise UsageError(f"`engine` must be 'tf' or 'grain'. Received: {engine!r}")


def ordered_batches(loader, batch_size, num_workers=4, skipped=None, desc=None):
    """Batches of a loader's clips in dataset order (fixed clip handling when
    the loader is not training), decoded by `num_workers` threads (0: one); bad
    files are recorded in `skipped` and left out.

    Yields:
        `(indices, waveforms (n, samples), targets)` with `n <= batch_size`.
    """
    skipped = skipped if skipped is not None else SkippedFiles()
    size = len(loader.dataset)
    with concurrent.futures.ThreadPoolExecutor(max(1, num_workers)) as pool:
        for start in tqdm(range(0, size, batch_size), desc=desc, disable=desc is None, leave=False):
            indices = range(start, min(start + batch_size, size))
            batch = [(i, example) for i, example in
                     zip(indices, pool.map(lambda i: _safe_load(loader, skipped, i, 0), indices))
                     if example is not None]
            if batch:
                yield ([i for i, _ in batch], np.stack([example[0] for _, example in batch]),
                       [example[1] for _, example in batch])


def _stream(sampler, repeat, stream):
    """`(position, clip index, clip seed)` of the stream's own positions from its start on."""
    per_epoch = len(sampler.order(0)[0])
    epoch, indices, seeds = None, None, None
    for position in stream.positions():
        if position // per_epoch != epoch:
            epoch = position // per_epoch
            if epoch and not repeat:
                return
            indices, seeds = sampler.order(epoch)
        yield position, indices[position % per_epoch], seeds[position % per_epoch]


def _safe_load(loader, skipped, index, seed, stream=None, position=None):
    try:
        return loader(index, seed)
    except AudioDecodeError as error:
        skipped.record(error)
        if stream is not None:
            stream.record_undecoded(position)
        return None


def _tf_pipeline(loader, sampler, batch_size, training, repeat, num_workers, skipped, stream):
    if importlib.util.find_spec("tensorflow") is None:
        raise ModuleNotFoundError("The tf.data input pipeline (engine='tf') needs TensorFlow: pip install "
                                  "'keras-bat[tensorflow]', or use engine='grain' (pip install 'keras-bat[data]').")
    tf = import_tensorflow()

    template = loader.target(loader.dataset.clips[0])  # the targets' structure, shapes and dtypes
    flat_spec = [(np.shape(a), np.asarray(a).dtype) for a in keras.tree.flatten(template)]
    empty_targets = [np.zeros(shape, dtype) for shape, dtype in flat_spec]

    def load(position, index, seed):
        example = _safe_load(loader, skipped, index, seed, stream, position)
        if example is None:
            return [np.zeros(loader.clip_samples, "float32"), *empty_targets, np.bool_(False)]
        return [example[0], *keras.tree.flatten(example[1]), np.bool_(True)]

    def tf_load(position, index, seed):
        values = tf.numpy_function(load, [position, index, seed],
                                   [tf.float32] + [tf.as_dtype(d) for _, d in flat_spec] + [tf.bool], stateful=False)
        values = [tf.ensure_shape(v, s) for v, s in
                  zip(values, [(loader.clip_samples,)] + [s for s, _ in flat_spec] + [()])]
        targets = keras.tree.pack_sequence_as(template, values[1:-1])
        return values[0], targets, values[-1]

    data = tf.data.Dataset.from_generator(lambda: _stream(sampler, repeat, stream), output_signature=(
        tf.TensorSpec((), tf.int64), tf.TensorSpec((), tf.int64), tf.TensorSpec((), tf.int64)))
    data = data.map(tf_load, num_parallel_calls=num_workers or None, deterministic=True)  # 0: one at a time
    data = data.filter(_is_loaded).map(_drop_flag)
    return data.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)


def _waveforms_only(waveforms, targets):
    return waveforms


def _is_loaded(waveform, target, ok):
    return ok


def _drop_flag(waveform, target, ok):
    return waveform, target


def _grain_pipeline(loader, sampler, batch_size, training, repeat, num_workers, skipped, stream):
    import grain

    per_epoch = len(sampler.order(0)[0])
    order = functools.lru_cache(maxsize=2)(sampler.order)  # decoding threads may straddle two epochs

    def load(count):
        position = stream.position(count)
        epoch, i = divmod(position, per_epoch)
        indices, seeds = order(epoch)
        return _safe_load(loader, skipped, indices[i], seeds[i], stream, position)

    own_positions = sys.maxsize if repeat else sum(1 for _ in itertools.takewhile(
        lambda position: position < per_epoch, stream.positions()))
    data = grain.MapDataset.range(0, own_positions).map(load)
    data = data.to_iter_dataset(grain.ReadOptions(num_threads=num_workers, prefetch_buffer_size=2 * batch_size))
    data = data.filter(lambda example: example is not None)
    return data.batch(batch_size, drop_remainder=training)
