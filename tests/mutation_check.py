"""Plants known bugs in a copy of the project, one at a time, and runs the tests that must catch
each; reports the survivors (bugs no test caught).

    python tests/mutation_check.py                    # every bug, torch backend
    python tests/mutation_check.py --backend jax -k attention
    python tests/mutation_check.py --list

Each bug is a `Mutation`: a piece of source replaced by a plausible mistake. The list is the suite's
own: every bug a test was written for, and every bug found later, goes here (tests/README.md keeps
the table). The copy is made once per run (the working tree is never touched); the tests run in it
with `KERAS_BAT_PARITY_DIR` pointing at the parity fixtures beside this checkout.
"""

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Mutation:
    name: str
    path: str
    original: str
    mutated: str
    tests: list
    backend: str = None  # a bug only one backend shows; None: the run's backend


MUTATIONS = [
    # --- The attention path the encoders use (key lengths) ---
    Mutation("key lengths: one key too many", "keras_bat/ops/attention.py",
             "key_mask = positions[None, :] < ops.cast(key_lengths",
             "key_mask = positions[None, :] <= ops.cast(key_lengths",
             ["tests/test_layers_transformer.py"]),
    Mutation("key lengths counted after the queries' offset", "keras_bat/ops/attention.py",
             'positions[None, :] < ops.cast(key_lengths, "int32")[:, None]',
             'positions[None, :] < ops.cast(key_lengths, "int32")[:, None] - key_offset',
             ["tests/test_layers_transformer.py"]),
    Mutation("queries in front not counted in the key lengths", "keras_bat/layers/patching.py",
             "return None if key_lengths is None else key_lengths + self.num_queries",
             "return None if key_lengths is None else key_lengths",
             ["tests/test_layers_transformer.py"]),
    Mutation("BEATs attention drops its key lengths", "keras_bat/models/beats/beats_layers.py",
             "use_kernels=self.use_kernels, key_lengths=key_lengths)", "use_kernels=self.use_kernels)",
             ["tests/test_layers_transformer.py"]),
    # --- Heads in training mode ---
    Mutation("linear probe: dropout before the norm", "keras_bat/heads/linear.py",
             "            x = self.norm(x)\n        return self.fc(self.head_dropout(x, training=training))",
             "            x = self.norm(self.head_dropout(x, training=training))\n        return self.fc(x)",
             ["tests/test_heads.py::test_heads_in_training_normalise_then_drop_out_then_project"]),
    Mutation("VQT head: dropout before the norm", "keras_bat/heads/vqt.py",
             "            x = self.norm(x)\n        return self.fc(self.head_dropout(x, training=training))",
             "            x = self.norm(self.head_dropout(x, training=training))\n        return self.fc(x)",
             ["tests/test_heads.py::test_heads_in_training_normalise_then_drop_out_then_project"]),
    Mutation("ASR head: dropout before the norm", "keras_bat/heads/asr.py",
             "            x = self.norm(x)\n        logits = self.fc(self.head_dropout(x, training=training))",
             "            x = self.norm(self.head_dropout(x, training=training))\n        logits = self.fc(x)",
             ["tests/test_heads.py::test_heads_in_training_normalise_then_drop_out_then_project"]),
    Mutation("CGP: dropout never active", "keras_bat/heads/prototypes.py",
             "return self.fc(self.head_dropout(self.similarity_features(features), training=training))",
             "return self.fc(self.head_dropout(self.similarity_features(features), training=False))",
             ["tests/test_heads.py::test_heads_in_training_normalise_then_drop_out_then_project"]),
    Mutation("task model: a NumPy batch beside the query tokens (JAX refuses the mixed input)",
             "keras_bat/models/audio_classifier.py",
             "            x = ops.convert_to_tensor(x)  # (a NumPy batch", "            # (a NumPy batch",
             ["tests/test_heads.py::test_task_model_runs_the_head_in_training_mode_in_fit"], backend="jax"),
    Mutation("task model calls its head without the training flag", "keras_bat/models/audio_classifier.py",
             "            features = {k: ops.stop_gradient(v) for k, v in features.items()}\n"
             "        return self.head(features, training=training)",
             "            features = {k: ops.stop_gradient(v) for k, v in features.items()}\n"
             "        return self.head(features)",
             ["tests/test_heads.py::test_task_model_runs_the_head_in_training_mode_in_fit"]),
    # --- Streaming edges ---
    Mutation("streaming: a padded last batch keeps its padding rows", "keras_bat/models/streaming.py",
             "return {name: value[:count] for name, value in outputs.items()}", "return outputs",
             ["tests/test_workflows_embed.py::test_streamed_chunks_equal_the_whole_clip"]),
    Mutation("streaming: the last partial batch of whole chunks dropped", "keras_bat/models/streaming.py",
             "        if batch:\n            yield self._encode(ops.stack(batch), query_tokens)\n\n", "\n",
             ["tests/test_workflows_embed.py::test_streamed_chunks_equal_the_whole_clip"]),
    Mutation("streaming: a masked chunk's padded patches kept", "keras_bat/models/streaming.py",
             "            features = {**features, \"patch_tokens\": features[\"patch_tokens\"][:, :, :time_patches]}",
             "            pass",
             ["tests/test_workflows_embed.py::test_streamed_chunks_equal_the_whole_clip"]),
    Mutation("tagging: a short recording not padded to the training length", "keras_bat/models/streaming.py",
             "            padded = max(padded, self.frontend.time_frames)", "            pass",
             ["tests/test_workflows_tag.py::test_clip_length_policy_short_clips_as_in_training_long_ones_whole"]),
    Mutation("tagging: frames of the padding past a short recording scored", "keras_bat/workflows/tag.py",
             'outputs["probabilities"].reshape(-1, len(self.label_names))[:frames_left]',
             'outputs["probabilities"].reshape(-1, len(self.label_names))',
             ["tests/test_workflows_tag.py::test_clip_length_policy_short_clips_as_in_training_long_ones_whole"]),
    Mutation("evaluation: the last partial batch of clips dropped", "keras_bat/data/pipeline.py",
             "for start in tqdm(range(0, size, batch_size)",
             "for start in tqdm(range(0, size - batch_size + 1, batch_size)",
             ["tests/test_workflows_feature_cache.py::test_evaluation_batches_cover_every_clip_in_order"]),
    # --- What the pretrainer applies ---
    Mutation("pretrainer: the default mask ratio instead of the setting", "keras_bat/models/bat/bat_pretrainer.py",
             "self.mask_ratio, seed=self.seed_generator)", "0.8, seed=self.seed_generator)",
             ["tests/test_models_bat_pretrainer.py::test_fit_draws_its_views_and_mask_ratio"]),
    Mutation("pretrainer: one view per clip", "keras_bat/models/bat/bat_pretrainer.py",
             "masks = inverse_block_mask(batch * self.num_views,", "masks = inverse_block_mask(batch * 1,",
             ["tests/test_models_bat_pretrainer.py::test_fit_draws_its_views_and_mask_ratio"]),
    Mutation("pretrainer: warm-up decay one update too long", "keras_bat/models/bat/bat_pretrainer.py",
             "return ops.where(step < self.ema_warmup_steps, rising, self.ema_decay_end)",
             "return ops.where(step <= self.ema_warmup_steps, rising, self.ema_decay_end)",
             ["tests/test_models_bat_pretrainer.py::test_fit_moves_the_teacher_with_the_scheduled_decay"]),
    Mutation("pretrainer: the EMA decay of the next update (off by one)", "keras_bat/models/bat/bat_pretrainer.py",
             'self.ema_decay(ops.cast(iterations_after, "int32") - 1)',
             'self.ema_decay(ops.cast(iterations_after, "int32"))',
             ["tests/test_models_bat_pretrainer.py::test_fit_moves_the_teacher_with_the_scheduled_decay"]),
    Mutation("pretrain recipe: mask ratio not passed on", "keras_bat/workflows/pretrain.py",
             'mask_ratio=settings["mask_ratio"],', "",
             ["tests/test_workflows.py::test_pretrain_then_probe_the_exported_backbone"]),
    # --- Augmentation inside the task model ---
    Mutation("mixup: labels mixed with the other weight", "keras_bat/data/augment.py",
             "mixed_labels = mix(labels, weight)", "mixed_labels = mix(labels, 1.0 - weight)",
             ["tests/test_data_augment.py::test_classifier_trains_on_labels_mixed_with_the_inputs_weights"]),
    Mutation("task model: trains on the unmixed labels", "keras_bat/models/audio_classifier.py",
             "x, y = self.augmentation.augment_spectrograms(x, y)",
             "x, _ = self.augmentation.augment_spectrograms(x, y)",
             ["tests/test_data_augment.py::test_classifier_trains_on_labels_mixed_with_the_inputs_weights"]),
    Mutation("spectrogram augmentation: SpecAugment before mixup", "keras_bat/data/augment.py",
             "        if self.uses_mixup:\n            spectrograms, labels = mixup(",
             "        spectrograms = spec_augment(spectrograms, self.freq_mask_param, self.time_mask_param,\n"
             "                                    self.seed_generator, self.mask_repeats)\n"
             "        if self.uses_mixup:\n            spectrograms, labels = mixup(",
             ["tests/test_data_augment.py::test_spectrogram_augmentations_run_roll_then_mixup_then_masks"]),
    # --- Metrics on real label sets ---
    Mutation("streaming mAP: classes without positives count as 0", "keras_bat/training/metrics.py",
             "return ops.sum(ap * present) / ops.maximum(ops.sum(present), 1.0)",
             "return ops.sum(ap * present) / float(ap.shape[0])",
             ["tests/test_training.py::test_streaming_map_leaves_out_classes_without_positives"]),
    Mutation("exact mAP: classes without positives count as 0", "keras_bat/training/metrics.py",
             "return float(np.nanmean(scores)) if", "return float(np.mean(np.nan_to_num(scores))) if",
             ["tests/test_training.py"]),
    Mutation("ROC AUC: ties ranked in order instead of shared", "keras_bat/training/metrics.py",
             'ranks = rankdata(np.asarray(y_score, dtype="float64").ravel())',
             'ranks = rankdata(np.asarray(y_score, dtype="float64").ravel(), method="ordinal")',
             ["tests/test_training.py"]),
    # --- The command line ---
    Mutation("CLI: any ValueError is a user's mistake", "keras_bat/cli/__init__.py",
             "USER_ERRORS = (UsageError, OSError)", "USER_ERRORS = (ValueError, OSError)",
             ["tests/test_cli.py::test_an_internal_bug_keeps_its_traceback"]),
    Mutation("tag: label=value thresholds taken in sorted label order", "keras_bat/workflows/tag.py",
             "values = [thresholds.get(name, DEFAULT_THRESHOLD) for name in label_names]",
             "values = [thresholds[name] for name in sorted(thresholds)]",
             ["tests/test_workflows_tag.py::test_events_equal_those_of_the_whole_clip_frame_probabilities"]),
    Mutation("Hub: a URI resolved again on every use", "keras_bat/convert/hub.py",
             "    if key not in _RESOLVED or not os.path.isdir(_RESOLVED[key]):", "    if True:",
             ["tests/test_convert_hub.py::test_a_probe_on_a_release_asks_the_hub_once_and_reads_its_weights_once"]),
    Mutation("encoder of a release named by loading its tensors", "keras_bat/models/presets.py",
             "recognise_checkpoint(checkpoint_shapes(path), source)",
             "recognise_checkpoint(read_state_dict(path), source)",
             ["tests/test_convert_hub.py::test_a_probe_on_a_release_asks_the_hub_once_and_reads_its_weights_once"]),
    Mutation("presets: a task preset's folder not read as its backbone's preset", "keras_bat/models/presets.py",
             ' or (found.kind == "task" and found.backbone_class is not None):', ":",
             ["tests/test_saved_models.py::test_saved_task_preset_loads_with_its_outputs_and_backbone"]),
    Mutation("presets: a release's family taken as the first registered", "keras_bat/models/presets.py",
             "            return backbone_class, found[0]",
             "            return classes[0], found[0]",
             ["tests/test_convert_hub.py::test_the_base_class_returns_the_family_every_source_holds"]),
    Mutation("presets: the Keras weights file not read (the encoder keeps its initial weights)",
             "keras_bat/models/backbone.py", "        if os.path.isfile(native):", "        if False:",
             ["tests/test_saved_models.py::test_saved_task_preset_loads_with_its_outputs_and_backbone"]),
    Mutation("presets: an earlier preset's official-name weights not read", "keras_bat/models/backbone.py",
             "        elif os.path.isfile(os.path.join(directory, WEIGHTS_FILE)):", "        elif False:",
             ["tests/test_saved_models.py::test_saved_task_preset_loads_with_its_outputs_and_backbone"]),
    Mutation("presets: saved under the official names again (a converter back on the load path)",
             "keras_bat/models/backbone.py",
             "        self.save_weights(os.path.join(directory, NATIVE_WEIGHTS_FILE))",
             "        save_official_weights(self, os.path.join(directory, WEIGHTS_FILE))",
             ["tests/test_convert_official.py::"
              "test_presets_load_without_a_converter_and_export_official_writes_the_official_names"]),
    Mutation("presets: a finetuned model's augmentation class not registered before its config is read",
             "keras_bat/models/audio_classifier.py", "            import keras_bat.data.augment  # noqa: F401",
             "            pass",
             ["tests/test_models_audio_classifier.py::"
              "test_a_finetuned_preset_loads_in_a_process_that_imported_only_the_models"]),
    Mutation("frame targets on BAT's 0.16 s grid whatever the encoder", "keras_bat/workflows/probe.py",
             "patch_seconds = backbone.seconds_per_patch(plan.frontend)", "patch_seconds = 0.16",
             ["tests/test_extending.py::test_frame_targets_and_events_follow_the_encoders_time_grid"]),
    # --- Converters ---
    Mutation("converter: the attention gate not transposed", "keras_bat/models/bat/bat_convert.py",
             'params.update(linear(f"{name}.attn.gate", block.attn.gate))',
             'params[f"{name}.attn.gate.weight"] = Param(block.attn.gate.kernel)\n'
             '        params[f"{name}.attn.gate.bias"] = Param(block.attn.gate.bias)',
             ["tests/test_convert_mapping.py"]),
    Mutation("converter: BEATs query and key projections swapped", "keras_bat/models/beats/beats_convert.py",
             'params.update(linear(f"{name}.self_attn.{projection}", getattr(attn, projection)))',
             'params.update(linear(f"{name}.self_attn.{projection}", getattr(attn, '
             '{"q_proj": "k_proj", "k_proj": "q_proj"}.get(projection, projection))))',
             ["tests/test_convert_mapping.py"]),
    Mutation("converter: the LSTM's second bias dropped", "keras_bat/convert/mapping.py",
             "to_keras=lambda ih, hh: ih + hh", "to_keras=lambda ih, hh: ih",
             ["tests/test_convert_mapping.py"]),
    # --- The package's shape ---
    Mutation("an import back up the rooms (heads read the merge table from models)", "keras_bat/heads/base.py",
             "from keras_bat.layers.chunk_merge import WHOLE_CLIP_MERGES",
             "from keras_bat.models.backbone import WHOLE_CLIP_MERGES",
             ["tests/test_package_imports.py"]),
    Mutation("BATBackbone registered under another package name (saved models orphaned)",
             "keras_bat/models/bat/bat_backbone.py",
             '@keras.saving.register_keras_serializable(package="keras_bat")\nclass BATBackbone',
             '@keras.saving.register_keras_serializable(package="keras_bat.models")\nclass BATBackbone',
             ["tests/test_saved_models.py"]),
    Mutation("a Hub URI's subfolder dropped", "keras_bat/convert/hub.py",
             "path = os.path.join(folder, subfolder) if subfolder else folder", "path = folder",
             ["tests/test_convert_hub.py"]),
    # --- Task presets and tagging ---
    Mutation("a task preset's head weights not saved", "keras_bat/models/audio_classifier.py",
             "save_weights_skipping(self, os.path.join(directory, TASK_WEIGHTS_FILE), [self.backbone])",
             "save_weights_skipping(self, os.path.join(directory, TASK_WEIGHTS_FILE), [self.backbone, self.head])",
             ["tests/test_models_audio_classifier.py::test_classifier_preset_restores_frontend_backbone_and_head"]),
    Mutation("events: the median window's left context dropped", "keras_bat/workflows/tag.py",
             "self.context = np.repeat(probabilities[:1], self.half, axis=0)",
             "self.context = probabilities[:0]",
             ["tests/test_workflows_tag.py::test_streamed_event_decoding_equals_the_whole_clip"]),
    Mutation("events: an event open at the end of a recording lost", "keras_bat/workflows/tag.py",
             "            events.append((int(self.onsets[label]), self.frame, int(label), float(self.peaks[label])))\n"
             "        self.onsets[:] = -1",
             "            pass\n        self.onsets[:] = -1",
             ["tests/test_workflows_tag.py::test_streamed_event_decoding_equals_the_whole_clip"]),
    Mutation("tagging: a multiclass model scored by sigmoids", "keras_bat/models/audio_classifier.py",
             'return ops.softmax(logits, axis=-1) if self.task == "multiclass" else ops.sigmoid(logits)',
             "return ops.sigmoid(logits)",
             ["tests/test_workflows_tag.py::test_clip_labels_equal_the_whole_clip_at_any_rate_and_channel_count"]),
    Mutation("tagging: channels averaged along the samples", "keras_bat/data/audio.py",
             "waveform = waveform.mean(axis=int(np.argmin(waveform.shape)))", "waveform = waveform.mean(axis=0)",
             ["tests/test_workflows_tag.py::test_clip_labels_equal_the_whole_clip_at_any_rate_and_channel_count"]),
    Mutation("own recordings: a class's files all in one split", "keras_bat/data/datasets.py",
             "count = min(max(round(len(clips) * test_fraction), 1), len(clips) - 1)",
             "count = round(len(clips) * test_fraction)",
             ["tests/test_data_datasets.py::test_labelled_recordings_of_ones_own"]),
    # --- Runs over several processes ---
    Mutation("processes: every process reads the first part of each batch", "keras_bat/data/pipeline.py",
             "return base + batches * size + index * local + within", "return base + batches * size + within",
             ["tests/test_data_pipeline.py::test_process_shards_make_up_the_single_process_batches"]),
    Mutation("processes: a backup keeps process 0's stream position for all", "keras_bat/training/resume.py",
             'index = {**index, "position": index["positions"][process_index()]}', "pass",
             ["tests/test_training_multiprocess.py::test_a_killed_process_stops_the_run_and_a_restart_resumes_exactly"],
             backend="jax"),
    Mutation("processes: each process's dataset auto-sharded again by Keras", "keras_bat/training/distribution.py",
             "distribution.auto_shard_dataset = False", "pass",
             ["tests/test_training_multiprocess.py::test_processes_train_the_weights_of_one_device"], backend="jax"),
    Mutation("processes: settings compared without the seed", "keras_bat/training/distribution.py",
             'shared = {name: value for name, value in run_config.items() if name != "distribution"}',
             'shared = {name: value for name, value in run_config.items() if name not in ("distribution", "seed")}',
             ["tests/test_training_multiprocess.py::test_bad_process_settings_stop_with_one_line"], backend="jax"),
    # --- tf.distribute (TensorFlow backend) ---
    Mutation("mirrored: every replica draws the same random values for its part", "keras_bat/ops/random.py",
             "if replica is None or replica.num_replicas_in_sync == 1:", "if True:",
             ["tests/test_training_tf_distribute.py::test_mirrored_devices_train_the_weights_of_one_device"],
             backend="tensorflow"),
    Mutation("mirrored: a custom loss not divided by the replicas", "keras_bat/training/losses.py",
             "return scale_loss_for_replicas(loss + ops.sum(ops.stack(extra)) if extra else loss)",
             "return loss + ops.sum(ops.stack(extra)) if extra else loss",
             ["tests/test_training_tf_distribute.py::test_mirrored_devices_train_the_weights_of_one_device"],
             backend="tensorflow"),
    # --- Kernel dispatch ---
    Mutation("dispatch: auto takes the fused attention on unpadded half-precision batches",
             "keras_bat/ops/attention.py",
             'return standardize_dtype(dtype) in ("bfloat16", "float16") and key_lengths is not None and bias is None',
             'return standardize_dtype(dtype) in ("bfloat16", "float16") and bias is None',
             ["tests/test_ops_dispatch.py::test_auto_takes_the_fused_attention_only_where_it_is_measured_faster"]),
    Mutation("dispatch: whole chunks still hand the blocks key lengths", "keras_bat/layers/patching.py",
             "            key_lengths = None\n", "            pass\n",
             ["tests/test_ops_dispatch.py::test_unpadded_chunks_give_the_blocks_no_lengths"]),
    Mutation("fused attention: the bias left out of the backward pass's probabilities", "kernels/gated_attention.py",
             "scores = _dot(q, tl.trans(k), PRECISION, UPCAST) * scale + bias",
             "scores = _dot(q, tl.trans(k), PRECISION, UPCAST) * scale",
             ["tests/kernels/test_gated_attention.py::test_additive_bias_forward_and_gradients_match_the_reference"]),
    Mutation("fused attention, one-pass backward: dQ's share added without the softmax scale",
             "kernels/gated_attention.py",
             "_dot(ds.to(k.dtype), k, PRECISION, UPCAST) * scale, mask=row_ok[:, None] & dim_ok[None, :])",
             "_dot(ds.to(k.dtype), k, PRECISION, UPCAST), mask=row_ok[:, None] & dim_ok[None, :])",
             ["tests/kernels/test_gated_attention.py::test_one_pass_backward_with_atomic_dq_equals_two_passes"]),
    Mutation("fused log-mel: the Nyquist bin (packed into bin 0's sine column) counted as bin 0's sine",
             "kernels/log_mel.py", "power = real * real + tl.where(is_nyquist, 0.0, imag * imag)",
             "power = real * real + imag * imag",
             ["tests/kernels/test_log_mel.py::test_equals_the_frontend_fixture",
              "tests/kernels/test_log_mel.py::test_other_sizes_and_windows_equal_torch_stft"]),
    Mutation("fused log-mel: bf16x3 without the frames' low part", "kernels/log_mel.py",
             "        return tl.dot(low, basis_high, acc, input_precision=\"ieee\")\n",
             "        return acc\n",
             ["tests/kernels/test_log_mel.py::test_equals_the_frontend_fixture"]),
    # --- Keras citizens: precision, quantization, output specs, LoRA, streamed frontends ---
    Mutation("encoders: the dtype policy left out of the config", "keras_bat/models/backbone.py",
             "            self.dtype_policy = keras.dtype_policies.get(dtype)", "            pass",
             ["tests/test_contract.py::test_a_mixed_policy_survives_configs_files_and_presets"]),
    Mutation("encoders: quantized layers left out of the config", "keras_bat/models/backbone.py",
             "            if quantized:\n", "            if False:\n",
             ["tests/test_contract.py::test_quantize_straight_from_presets_and_through_keras_files"]),
    Mutation("encoders: the blocks' projections left float by quantize (Keras refuses Dense subclasses)",
             "keras_bat/layers/dense.py", "super().quantize(mode, type_check=False, config=config)",
             "super().quantize(mode, type_check=True, config=config)",
             ["tests/test_contract.py::test_quantize_straight_from_presets_and_through_keras_files"]),
    Mutation("task model: quantize reaches the head too", "keras_bat/models/audio_classifier.py",
             "self.backbone.quantize(mode, config=config, filters=filters, **kwargs)",
             "super().quantize(mode, config=config, filters=filters, **kwargs)",
             ["tests/test_contract.py::test_quantize_straight_from_presets_and_through_keras_files"]),
    Mutation("layers: output specs of concrete inputs not described", "keras_bat/layers/base.py",
             "return super().compute_output_spec(*symbolic(args), **symbolic(kwargs))",
             "return super().compute_output_spec(*args, **kwargs)",
             ["tests/test_contract.py::test_task_model_contract", "tests/test_layers_frontend.py"]),
    Mutation("LoRA: a trainable encoder unfreezes its frozen weights", "keras_bat/models/backbone.py",
             "        if value and self.lora_rank is not None:\n            self._freeze_all_but_lora()",
             "        pass",
             ["tests/test_contract.py::test_lora_trains_its_factors_alone_and_saves_merged",
              "tests/test_workflows.py::test_finetune_command_trains_the_encoder"]),
    Mutation("streamed frontend: per-clip statistics of the first chunk only", "keras_bat/layers/frontend.py",
             "statistics = self.merge_statistics(statistics, self.frame_statistics(chunk))",
             "statistics = statistics or self.frame_statistics(chunk)",
             ["tests/test_contract.py::test_frontend_streamed_windows_equal_the_whole_clip"]),
    Mutation("embed: a pending Ctrl-C never raised where the run checks", "keras_bat/workflows/run_folder.py",
             "    def check(self):\n        if self.requested:", "    def check(self):\n        if False:",
             ["tests/test_workflows_embed.py::test_ctrl_c_is_raised_only_where_the_run_checks_for_it",
              "tests/test_workflows_embed.py::test_an_interrupted_embed_resumes_to_the_uninterrupted_result"]),
    # --- Earlier bugs (tests/README.md) ---
    Mutation("decoding: no context before a seek in a compressed stream", "keras_bat/data/audio.py",
             "SEEK_CONTEXT_FRAMES = 4096", "SEEK_CONTEXT_FRAMES = 0",
             ["tests/test_data_audio.py::test_long_compressed_files_decode_whole"]),
    Mutation("no stop_gradient on a frozen backbone's features", "keras_bat/models/audio_classifier.py",
             "features = {k: ops.stop_gradient(v) for k, v in features.items()}", "pass",
             ["tests/test_models_audio_classifier.py::test_no_gradient_flows_through_a_frozen_backbone"]),
]


def copy_project(destination):
    """The files the tests read: the package, its kernels and recipes, the tests."""
    for name in ("keras_bat", "kernels", "recipes", "tests", "benchmarks", "pyproject.toml", "setup.py",
                 "README.md"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, destination / name)
    (destination / "keras_bat_kernels").symlink_to("kernels")  # the name `kernels/` installs under


def run_tests(copy, tests, backend, timeout):
    environment = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(copy),
                       KERAS_BAT_PARITY_DIR=os.environ.get("KERAS_BAT_PARITY_DIR",
                                                           str(ROOT.parent / "shared" / "parity" / "tiny")))
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        result = subprocess.run(command, cwd=copy, env=environment, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", ""
    # pytest: 0 all passed, 1 some failed; anything else (collection or usage errors) is no verdict.
    return {0: "passed", 1: "failed"}.get(result.returncode, f"error {result.returncode}"), result.stdout[-2000:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="torch", choices=("tensorflow", "jax", "torch"))
    parser.add_argument("-k", dest="keywords", nargs="+", default=[""],
                        help="only the bugs whose name contains one of these")
    parser.add_argument("--list", action="store_true", help="list the bugs and their tests")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per test run")
    args = parser.parse_args()
    mutations = [m for m in MUTATIONS if any(k.lower() in m.name.lower() for k in args.keywords)]
    if args.list:
        for m in mutations:
            print(f"{m.name}\n    {m.path}: {' '.join(m.tests)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="keras-bat-mutations-") as folder:
        copy = Path(folder)
        copy_project(copy)
        for package in ("keras_bat", "keras_bat_kernels"):
            probe = subprocess.run([sys.executable, "-c", f"import {package}; print({package}.__file__)"], cwd=copy,
                                   env=dict(os.environ, PYTHONPATH=str(copy)), capture_output=True, text=True)
            if not probe.stdout.strip().startswith(str(copy)):
                sys.exit(f"the copy's {package} is not the one imported "
                         f"({probe.stdout.strip() or probe.stderr[-500:]})")
        tests = sorted({t for m in mutations for t in m.tests})
        verdict, output = run_tests(copy, tests, args.backend, args.timeout * 3)
        if verdict != "passed":
            sys.exit(f"the tests fail without any planted bug ({verdict}):\n{output}")
        rows = []
        for m in mutations:
            path = copy / m.path
            source = path.read_text()
            if source.count(m.original) != 1:
                rows.append((m, "stale", 0.0, f"the original text occurs {source.count(m.original)} times"))
                continue
            path.write_text(source.replace(m.original, m.mutated))
            start = time.time()
            try:
                verdict, output = run_tests(copy, m.tests, m.backend or args.backend, args.timeout)
            finally:
                path.write_text(source)
            result = {"failed": "caught", "passed": "SURVIVED"}.get(verdict, verdict)
            rows.append((m, result, time.time() - start, ""))
            print(f"{result:9s} {time.time() - start:6.1f} s  {m.name}", flush=True)
    print(f"\n| bug | file | tests | result ({args.backend}) |\n|---|---|---|---|")
    for m, result, _, note in rows:
        named = ", ".join(f"`{t}`" for t in m.tests)
        backend = f" ({m.backend})" if m.backend else ""
        print(f"| {m.name} | `{m.path}` | {named} | {result}{backend}{' ' + note if note else ''} |")
    survivors = [m.name for m, result, _, _ in rows if result != "caught"]
    print(f"\n{len(rows) - len(survivors)} of {len(rows)} planted bugs caught" +
          (f"; not caught: {'; '.join(survivors)}" if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
