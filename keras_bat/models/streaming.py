"""The one path by which audio longer than an encoder's chunk is encoded: a batch of time
chunks at a time, with what the caller keeps of the backbone's outputs (a head's chunk
summaries, frame probabilities, the selected blocks' embeddings) computed in the same call on
the device, so that only that comes back to the host.

`ChunkEncoder` runs the backbone and the kept part on a batch of spectrogram chunks;
`RecordingStream` frames a recording (a file or a waveform) chunk by chunk and feeds it;
`AudioClassifier.predict_long`, `AudioTagger`, `keras-bat embed` and the feature cache are built
on them.

Clip length: a recording is encoded whole, never cropped; one shorter than the frontend's
`time_frames` (a task model's training length) is zero-padded to it, as the frontend pads it in
training, so that a short clip gets the scores `model(waveform)` gives it.
"""

import keras
import numpy as np
from keras import ops

from keras_bat.layers.chunk_merge import WHOLE_CLIP_MERGES, ChunkSummaries
from keras_bat.layers.patching import whole_patch_frames
from keras_bat.ops import no_gradients


class ChunkStep(keras.Model):
    """The backbone in inference mode, then `keep` on its outputs (the features themselves
    without it), as float32: one call, compiled by `predict_on_batch`."""

    def __init__(self, backbone, keep=None, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.keep = keep
        self.built = True  # nothing of its own to build: its layers are built

    def call(self, inputs, time_patches=None):
        features = self.backbone(inputs, training=False)
        if time_patches is not None:  # time padded past the chunk's patches (masked): drop its tokens
            features = {**features, "patch_tokens": features["patch_tokens"][:, :, :time_patches]}
        kept = features if self.keep is None else self.keep(features)
        return {name: ops.cast(value, "float32") for name, value in kept.items()}


class ChunkEncoder:
    """The backbone on batches of time chunks, with what the caller keeps of its outputs.

    A batch of full chunks (`chunk_time_patches` patches each) goes through the compiled
    `predict_on_batch` (one compiled shape per batch size); a shorter chunk runs eagerly, so
    that no compiled call sees a second length.

    Args:
        backbone: an `EncoderModel`.
        keep: a layer from the backbone's output dict to a dict of tensors with one row per
            chunk (e.g. `HeadChunkSummary(head)`), run in the same call; `None` keeps the
            outputs themselves.
        batch_size: full chunks per call: a batch of fewer is zero-padded to a power of two
            (at most `batch_size`), so that the compiled call sees a handful of shapes. `None`:
            batches are encoded as they come.
    """

    def __init__(self, backbone, keep=None, batch_size=None):
        self.backbone = backbone
        self.step = ChunkStep(backbone, keep)
        self.batch_size = batch_size
        self.chunk_frames = backbone.chunk_time_patches * backbone.patch_size
        # A backbone that takes a padding mask and whose outputs on real patches do not depend on
        # masked ones runs a shorter chunk zero-padded to a power of two of patches: a few shapes
        # for every file, where each new shape costs JAX a compilation of every operation.
        self.pad_short_chunk = backbone.use_padding_mask and backbone.padding_is_exact

    def __call__(self, spectrograms, query_tokens=None):
        """The kept outputs on `spectrograms` `(chunks, frames, mels)` (frames a multiple of the
        patch size, at most a chunk's), as a dict of float32 NumPy arrays, one row per chunk.
        `query_tokens`: `(1, depth, query tokens, dim)`, the tokens a VQT head reads inside the
        backbone."""
        count, frames = spectrograms.shape[:2]
        full_chunk = frames == self.chunk_frames
        if full_chunk and self.batch_size and count < self.batch_size:
            spectrograms = _pad_axis(spectrograms, 0, min(self.batch_size, _power_of_two(count)))
        patches = frames // self.backbone.patch_size
        time_padded = not full_chunk and self.pad_short_chunk and patches != _power_of_two(patches)
        if time_padded:
            spectrograms = _pad_axis(spectrograms, 1, self.backbone.patch_size * _power_of_two(patches))
        rows, padded_frames = spectrograms.shape[:2]
        inputs = {"spectrogram": spectrograms}
        if self.backbone.use_padding_mask:
            inputs["padding_mask"] = ops.convert_to_tensor(
                np.broadcast_to(np.arange(padded_frames) < frames, (rows, padded_frames)))
        if query_tokens is not None:
            inputs["query_tokens"] = ops.repeat(ops.convert_to_tensor(query_tokens), rows, axis=0)
        inputs = inputs if len(inputs) > 1 else spectrograms
        if full_chunk:
            outputs = self.step.predict_on_batch(inputs)
        else:
            with no_gradients():
                outputs = self.step(inputs, time_patches=patches if time_padded else None)
            outputs = {name: keras.ops.convert_to_numpy(value) for name, value in outputs.items()}
        return {name: value[:count] for name, value in outputs.items()}

    def chunks(self, spectrograms, query_tokens=None):
        """Yields `(time_patches, outputs)` of each time chunk of `spectrograms` `(batch, frames,
        mels)` (frames a multiple of the patch size): the k-th chunk of every clip in one call,
        as the backbone encodes long inputs. Memory does not grow with the clips' length."""
        for start in range(0, spectrograms.shape[1], self.chunk_frames):
            chunk = spectrograms[:, start:start + self.chunk_frames]
            yield chunk.shape[1] // self.backbone.patch_size, self(chunk, query_tokens)


class SelectOutputs(keras.layers.Layer):
    """The backbone outputs `names` alone (e.g. the class tokens, not every patch token)."""

    def __init__(self, names, **kwargs):
        super().__init__(**kwargs)
        self.names = list(names)
        self.built = True

    def call(self, features):
        return {name: features[name] for name in self.names}


class HeadChunkSummary(keras.layers.Layer):
    """What a head keeps of each chunk (`chunk_summary`), without the merge rules, which
    `merges` holds once it has been called (they are the same for every chunk)."""

    def __init__(self, head, **kwargs):
        super().__init__(**kwargs)
        self.head = head
        self.merges = {}
        self.built = True

    def call(self, features):
        summary = self.head.chunk_summary(features)
        self.merges.update({name: merge for name, (_, merge) in summary.items()})
        return {name: value for name, (value, _) in summary.items()}

    def add_chunks(self, outputs, time_patches, summaries):
        """Adds each chunk (row) of `outputs`, the chunks of one clip, to `summaries` (a
        `ChunkSummaries`)."""
        for row in range(len(next(iter(outputs.values())))):
            summaries.add({name: (value[row:row + 1], self.merges[name]) for name, value in outputs.items()},
                          time_patches)


class FrameProbabilities(HeadChunkSummary):
    """A frame-level task model's probabilities on each chunk's time patches, `(chunks, time
    patches, classes)`: its head on the chunk's summary, then its output activation."""

    def __init__(self, model, **kwargs):
        super().__init__(model.head, **kwargs)
        self.probabilities = model.probabilities

    def call(self, features):
        summary = super().call(features)
        return {"probabilities": self.probabilities(self.head.call_on_summary(summary, training=False))}


class RecordingStream:
    """Streams recordings through a backbone, a chunk of `chunk_time_patches` at a time.

    Args:
        backbone: an `EncoderModel`.
        frontend: the frontend that makes its spectrograms; `None` takes the
            backbone's (`make_frontend()`).
        batch_size: int, chunks per forward pass. Defaults to 8.
        keep: what is kept of each chunk's outputs (see `ChunkEncoder`).
    """

    def __init__(self, backbone, frontend=None, batch_size=8, keep=None):
        self.backbone = backbone
        self.frontend = frontend or backbone.make_frontend()
        self.batch_size = batch_size
        self.encoder = ChunkEncoder(backbone, keep, batch_size)
        self.chunk_frames = self.encoder.chunk_frames

    def layout(self, clip_samples):
        """`(frames, padded frames)` of a clip of `clip_samples` samples: the frontend's frames
        that whole patches hold (see `whole_patch_frames`), and the frames encoded, at least the
        frontend's `time_frames` (zeros after the clip's)."""
        frames = self.frontend.num_frames(clip_samples)
        padded = whole_patch_frames(frames, self.backbone.patch_size)
        if self.frontend.time_frames:
            padded = max(padded, self.frontend.time_frames)
        return min(frames, padded), padded

    def time_patches(self, clip_samples):
        """The time patches encoded of a clip of `clip_samples` samples."""
        return self.layout(clip_samples)[1] // self.backbone.patch_size

    def own_time_patches(self, clip_samples):
        """The time patches of the clip's own frames (without the padding to `time_frames`)."""
        return whole_patch_frames(self.frontend.num_frames(clip_samples), self.backbone.patch_size) \
            // self.backbone.patch_size

    @property
    def seconds_per_patch(self):
        return self.backbone.seconds_per_patch(self.frontend)

    def encode(self, source, clip_samples, info=None, query_tokens=None):
        """Yields `(time_patches, outputs)` of one recording, a batch of chunks at a time:
        each chunk's length in time patches (the last chunk comes alone when it is shorter) and
        the kept outputs as dicts of NumPy arrays, one row per chunk.

        Args:
            source: an audio file's path, or a mono waveform at the frontend's sample rate.
            clip_samples: int, the clip's length: the file's first samples, zero-padded past its end.
            info: the file's `audio_info`, when the caller has it.
            query_tokens: optional `(1, depth, query tokens, dim)` tokens of a VQT head.
        """
        batch = []
        for chunk in self._chunks(source, clip_samples, info):
            if chunk.shape[0] < self.chunk_frames:
                if batch:
                    yield self._encode(ops.stack(batch), query_tokens)
                    batch = []
                yield self._encode(chunk[None], query_tokens)
                continue
            batch.append(chunk)
            if len(batch) == self.batch_size:
                yield self._encode(ops.stack(batch), query_tokens)
                batch = []
        if batch:
            yield self._encode(ops.stack(batch), query_tokens)

    def _encode(self, spectrograms, query_tokens):
        return spectrograms.shape[1] // self.backbone.patch_size, self.encoder(spectrograms, query_tokens)

    def _chunks(self, source, clip_samples, info):
        """The clip's spectrogram chunk by chunk (backend tensors), zero frames after its own
        up to `layout`'s padded frames."""
        from keras_bat.data.audio import audio_info, load_window, waveform_window

        if isinstance(source, np.ndarray):
            def read(start, stop):
                return waveform_window(source, start, stop)
        else:
            info = info or audio_info(source)

            def read(start, stop):
                return load_window(source, start, stop, clip_samples, self.frontend.sample_rate, info)
        frames, padded = self.layout(clip_samples)
        position = 0
        for chunk in self.frontend.stream_frames(read, clip_samples, self.chunk_frames, keep_frames=frames):
            length = min(self.chunk_frames, padded - position)
            yield _pad_axis(chunk, 0, length) if chunk.shape[0] < length else chunk
            position += length
        while position < padded:
            length = min(self.chunk_frames, padded - position)
            yield ops.zeros((length, self.frontend.num_mels), "float32")
            position += length


def encode_whole_clips(encoder, spectrograms):
    """The backbone's outputs on whole clips `(batch, frames, mels)`, encoded a chunk at a time
    by `encoder` (a `ChunkEncoder` that keeps backbone outputs, e.g. `SelectOutputs`): class
    tokens averaged over chunks, patch tokens concatenated along time, as NumPy arrays."""
    summaries = ChunkSummaries()
    for time_patches, features in encoder.chunks(spectrograms):
        summaries.add({name: (value, WHOLE_CLIP_MERGES[name]) for name, value in features.items()}, time_patches)
    return {name: keras.ops.convert_to_numpy(value) for name, value in summaries.result().items()}


def _power_of_two(count):
    return 1 << (count - 1).bit_length()


def _pad_axis(tensor, axis, size):
    """`tensor` zero-padded at the end of `axis` to `size`."""
    widths = [(0, 0)] * len(tensor.shape)
    widths[axis] = (0, size - tensor.shape[axis])
    return ops.pad(tensor, widths)
