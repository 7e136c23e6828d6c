"""How encoder outputs merge over a long clip's time chunks: the contract that encoders,
heads and the streamed evaluation share."""

from keras import ops

from keras_bat.errors import UsageError

# How each backbone output merges over time chunks, as the backbone merges a long input's chunks.
WHOLE_CLIP_MERGES = {"cls_tokens": "chunk_mean", "patch_tokens": 2, "query_tokens": "chunk_mean"}


class ChunkSummaries:
    """Merges a clip's chunk summaries (`HeadContract.chunk_summary`) chunk by
    chunk: running sums, minima and maxima, and the time-patch parts that are
    concatenated."""

    def __init__(self):
        self.values, self.merges, self.chunks, self.time_patches = {}, {}, 0, 0

    def add(self, summary, time_patches):
        """Adds the summary of a chunk of `time_patches` time patches."""
        for name, (value, merge) in summary.items():
            value = ops.cast(value, "float32")
            if merge == "token_mean":
                value = value * time_patches
            previous = self.values.get(name)
            self.merges[name] = merge
            if isinstance(merge, int):
                self.values[name] = (previous or []) + [value]
            elif previous is None:
                self.values[name] = value
            elif merge == "min":
                self.values[name] = ops.minimum(previous, value)
            elif merge == "max":
                self.values[name] = ops.maximum(previous, value)
            elif merge in ("chunk_mean", "token_mean"):
                self.values[name] = previous + value
            else:
                raise UsageError(f"Unknown chunk merge {merge!r} for {name!r}: expected chunk_mean, token_mean, "
                                 "min, max or a time axis.")
        self.chunks += 1
        self.time_patches += time_patches

    def result(self):
        """The merged summary, `name -> tensor`."""
        merged = {}
        for name, value in self.values.items():
            merge = self.merges[name]
            if isinstance(merge, int):
                value = ops.concatenate(value, axis=merge)
            elif merge == "chunk_mean":
                value = value / self.chunks
            elif merge == "token_mean":
                value = value / self.time_patches
            merged[name] = value
        return merged
