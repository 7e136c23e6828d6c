"""Embeddings of a folder of audio: per-block class tokens of each clip and,
optionally, per-block frame embeddings (patch tokens averaged over frequency,
one per 160 ms)."""

from pathlib import Path

import numpy as np

from keras_bat.data.datasets import audio_files
from keras_bat.data.pipeline import SkippedFiles
from keras_bat.workflows.builders import build_backbone


def run_embed(folder, output, backbone="bat_base", weights=None, checkpoint_key=None, clip_seconds=10.24,
              batch_size=8, frames=False, num_workers=4, encoder="bat"):
    """Writes `output` (.npz) with `paths`, `clip_embeddings` `(clips, blocks,
    dim)` and, with `frames=True`, `frame_embeddings` `(clips, blocks,
    time_patches, dim)`; files that cannot be decoded are listed in `skipped`.

    Clips are cut or zero-padded to `clip_seconds` from their start; longer
    inputs than 10.24 s are encoded in chunks by the backbone.
    """
    import keras

    from keras_bat.workflows.probe import predict

    dataset = audio_files(folder)
    encoder = build_backbone({"encoder": encoder, "backbone": backbone, "weights": weights,
                              "checkpoint_key": checkpoint_key, "drop_path": 0.0, "dtype": None})
    frames_per_clip = int(round(clip_seconds * 100))
    frontend = encoder.make_frontend(frames_per_clip - frames_per_clip % encoder.patch_size)

    class Embedder(keras.Model):
        def call(self, waveforms):
            features = encoder(frontend(waveforms))
            outputs = {"cls": features["cls_tokens"]}
            if frames:
                outputs["frames"] = keras.ops.mean(features["patch_tokens"], axis=3)  # B, L, T, D
            return outputs

    skipped = SkippedFiles()
    clips, outputs, _ = predict(Embedder(), dataset, clip_seconds, batch_size, num_workers, skipped, stack=False)
    arrays = {"paths": np.array([c.path for c in clips]),
              "clip_embeddings": np.concatenate([o["cls"] for o in outputs]),
              "skipped": np.array([f"{p}\t{r}" for p, r in skipped.files])}
    if frames:
        arrays["frame_embeddings"] = np.concatenate([o["frames"] for o in outputs])
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    np.savez(output, **arrays)
    return {"output": str(output), "clips": len(clips), "skipped_files": skipped.counts(),
            "clip_embeddings": list(arrays["clip_embeddings"].shape)}
