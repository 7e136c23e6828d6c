"""BATPretrainer: masked latent prediction with an EMA teacher, trained by `model.fit`."""

import keras
from keras import ops

from keras_bat.errors import UsageError
from keras_bat.layers.decoder import MaskedDecoder
from keras_bat.layers.masking import inverse_block_mask
from keras_bat.models.bat.bat_backbone import BATBackbone
from keras_bat.ops.keras_internals import own_variables, step_counter
from keras_bat.ops.random import draw_rows
from keras_bat.training.losses import training_loss


def _normalize(x, axis):
    """`(x - mean) / sqrt(var + 1e-6)` over `axis` (no affine), in float32."""
    x = ops.cast(x, "float32")
    mean = ops.mean(x, axis=axis, keepdims=True)
    variance = ops.mean(ops.square(x - mean), axis=axis, keepdims=True)
    return (x - mean) / ops.sqrt(variance + 1e-6)


@keras.saving.register_keras_serializable(package="keras_bat")
class BATPretrainer(keras.Model):
    """BAT's self-supervised pretraining model.

    A student `BATBackbone` encodes only the kept patches of `num_views`
    differently masked views of each clip (inverse block masking); a
    `MaskedDecoder` predicts every patch's latent. An EMA teacher (another
    `BATBackbone`, not trained) encodes the full clip; its targets are each
    block's patch tokens instance-normalised over tokens, averaged over
    blocks and layer-normalised over features. The loss is the global loss
    (student class token vs. the targets' mean) plus the local loss (squared
    error on removed patches). After every optimizer step the teacher moves
    towards the student with a decay rising linearly from `ema_decay_start`
    to `ema_decay_end` over `ema_warmup_steps` steps.

    Args:
        encoder: dict of `BATBackbone` arguments (e.g. `{"dim": 384,
            "depth": 12, "num_heads": 6}`, or with `"dtype": "mixed_bfloat16"`,
            which the decoder follows); dropout and drop-path apply to the
            student only. Losses and targets are computed in float32.
        decoder_dim: int or `None`, decoder width (the encoder's by default).
        decoder_depth: int. Defaults to `6`.
        decoder_heads: int. Defaults to `12`.
        decoder_mlp_ratio: float. Defaults to `4.0`.
        time_frames: int, spectrogram frames (at most one chunk: 1024). The
            encoders' position table is built for this length's patch grid,
            as the official pretraining does, and `encoder["chunk_time_patches"]`
            becomes `time_frames // patch_size`: a backbone exported from a
            2.56 s pretraining encodes longer inputs in 2.56 s chunks.
            Defaults to `1024`.
        num_views: int, masked views per clip. Defaults to `16`.
        mask_ratio: float, share of removed patches. Defaults to `0.8`.
        ema_decay_start: float. Defaults to `0.9998`.
        ema_decay_end: float. Defaults to `0.99999`.
        ema_warmup_steps: int. Defaults to `100000`.
        frontend: optional layer from waveforms to spectrograms (its output
            must have `time_frames` frames).
        seed: int or `None`, seed of the masking.

    Inputs:
        Spectrograms `(batch, time_frames, num_mels)`, or waveforms with a frontend.
    """

    def __init__(self, encoder=None, decoder_dim=None, decoder_depth=6, decoder_heads=12,
                 decoder_mlp_ratio=4.0, time_frames=1024, num_views=16, mask_ratio=0.8,
                 ema_decay_start=0.9998, ema_decay_end=0.99999, ema_warmup_steps=100000,
                 frontend=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        encoder = dict(encoder or {})
        patch = encoder.get("patch_size", 16)
        max_time_patches = encoder.get("chunk_time_patches", 64)
        if time_frames % patch or not 0 < time_frames // patch <= max_time_patches:
            raise UsageError(
                f"`time_frames` must be a positive multiple of {patch} and at most "
                f"{max_time_patches * patch} (one chunk). Received: {time_frames}")
        # As in the official pretraining, the encoders' sine-cosine table is built
        # for the clips' own patch grid (below 1024 frames it is not a prefix of
        # the 1024-frame table); the exported backbone keeps it and encodes longer
        # inputs in chunks of this length.
        encoder["chunk_time_patches"] = time_frames // patch
        self.encoder_config = encoder
        self.student = BATBackbone(**encoder, name="student")
        teacher_config = {**encoder, "dropout": 0.0, "drop_path_rate": 0.0}
        self.teacher = BATBackbone(**teacher_config, name="teacher")
        self.teacher.trainable = False
        self.time_patches = time_frames // patch
        self.freq_patches = self.student.num_mels // patch
        self.decoder = MaskedDecoder(self.student.dim, self.time_patches, self.freq_patches, dim=decoder_dim,
                                     depth=decoder_depth, num_heads=decoder_heads,
                                     mlp_ratio=decoder_mlp_ratio, use_gate=self.student.use_gate,
                                     dtype=encoder.get("dtype"), name="decoder")
        self.frontend = frontend
        self.decoder_dim = decoder_dim
        self.decoder_depth = decoder_depth
        self.decoder_heads = decoder_heads
        self.decoder_mlp_ratio = decoder_mlp_ratio
        self.time_frames = time_frames
        self.num_views = num_views
        self.mask_ratio = mask_ratio
        self.ema_decay_start = ema_decay_start
        self.ema_decay_end = ema_decay_end
        self.ema_warmup_steps = ema_warmup_steps
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.global_loss_tracker = keras.metrics.Mean(name="global_loss")
        self.local_loss_tracker = keras.metrics.Mean(name="local_loss")
        self._build_parts()
        self.built = True  # every part is built; callbacks such as BackupAndRestore need this

    def _build_parts(self):
        self.teacher.set_weights(self.student.get_weights())  # teacher and student start equal
        self.decoder.build((None, None, self.student.dim))

    # --- Forward passes ---------------------------------------------------------

    def teacher_targets(self, spectrograms):
        """Teacher targets `(batch, N, dim)` for full spectrograms (float32, no gradient)."""
        patches = self.teacher(spectrograms, training=False)["patch_tokens"]  # B, L, T, F, D
        patches = ops.reshape(patches, (-1, self.student.depth, self.time_patches * self.freq_patches,
                                        self.student.dim))  # B, L, N, D
        targets = ops.mean(_normalize(patches, axis=2), axis=1)  # instance norm per block, block mean
        return ops.stop_gradient(_normalize(targets, axis=-1))

    def forward_with_masks(self, spectrograms, ids_keep_sorted, mask, training=False):
        """One training forward pass with given masks.

        Args:
            spectrograms: tensor `(batch, time_frames, num_mels)`.
            ids_keep_sorted: int tensor `(batch * num_views, num_kept)`; view
                `v` of clip `b` is row `b * num_views + v`.
            mask: tensor `(batch * num_views, N)`, 1 for removed patches.
            training: bool, dropout and drop-path of the student.

        Returns:
            Dict with `student_cls` `(B * V, dim)`, `student_patch`
            `(B * V, N, dim)`, `teacher_targets` `(B, N, dim)`, `global_loss`
            and `local_loss`.
        """
        spectrograms = ops.convert_to_tensor(spectrograms)
        num_views = ops.shape(ids_keep_sorted)[0] // ops.shape(spectrograms)[0]
        views = ops.repeat(spectrograms, num_views, axis=0)  # B * V, frames, mels
        student_cls, kept = self.student.encode_kept_patches(views, ids_keep_sorted, training=training)
        student_patch = self.decoder(kept, ids_keep_sorted, training=training)
        targets = self.teacher_targets(spectrograms)
        view_targets = ops.repeat(targets, num_views, axis=0)  # B * V, N, D
        student_cls = ops.cast(student_cls, "float32")
        student_patch = ops.cast(student_patch, "float32")
        mask = ops.cast(mask, "float32")
        global_loss = ops.mean(ops.square(student_cls - ops.mean(view_targets, axis=1)))
        local_error = ops.mean(ops.square(student_patch - view_targets), axis=-1)  # B * V, N
        local_loss = ops.sum(local_error * mask) / ops.sum(mask)
        return {"student_cls": student_cls, "student_patch": student_patch, "teacher_targets": targets,
                "global_loss": global_loss, "local_loss": local_loss}

    def call(self, inputs, training=False):
        spectrograms = self.frontend(inputs) if self.frontend is not None else inputs
        spectrograms = ops.cast(spectrograms, "float32")
        batch = spectrograms.shape[0]
        if batch is None:  # traced without a static batch size (e.g. grain batches under TensorFlow)
            batch = ops.shape(spectrograms)[0]
        masks = draw_rows(lambda rows: inverse_block_mask(rows, self.time_patches, self.freq_patches,
                                                          self.mask_ratio, seed=self.seed_generator),
                          batch * self.num_views)
        return self.forward_with_masks(spectrograms, masks["ids_keep_sorted"], masks["mask"], training=training)

    # --- Training ---------------------------------------------------------------

    def compile(self, optimizer="auto", learning_rate=5e-4, **kwargs):
        """Compiles with the paper's AdamW by default: beta_2 0.95, weight decay 0.05 on
        every trained variable (the reference pretraining has no parameter groups)."""
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=0.05, beta_2=0.95)
        super().compile(optimizer=optimizer, **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return training_loss(self, y_pred["global_loss"] + y_pred["local_loss"])

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        self.global_loss_tracker.update_state(y_pred["global_loss"])
        self.local_loss_tracker.update_state(y_pred["local_loss"])
        return super().compute_metrics(x, y, y_pred, sample_weight)

    @property
    def metrics(self):
        return super().metrics + [self.global_loss_tracker, self.local_loss_tracker]

    def ema_decay(self, update_index):
        """Teacher decay of the update with 0-based `update_index` (a tensor)."""
        step = ops.cast(update_index, "float32")
        last = max(self.ema_warmup_steps - 1, 1)
        rising = self.ema_decay_start + (self.ema_decay_end - self.ema_decay_start) * step / last
        return ops.where(step < self.ema_warmup_steps, rising, self.ema_decay_end)

    def _ema_pairs(self):
        return list(zip(self.teacher.weights, self.student.weights))

    def _step_decay(self, iterations_before, iterations_after):
        """Teacher decay for a train step; 1 (no move) when the student was not
        updated (a gradient-accumulation step)."""
        updated = ops.greater(ops.cast(iterations_after, "int32"), ops.cast(iterations_before, "int32"))
        return ops.where(updated, self.ema_decay(ops.cast(iterations_after, "int32") - 1), 1.0)

    def train_step(self, *args):
        # A backend branch outside ops/: Keras' JAX trainer hands train_step the state explicitly.
        if keras.backend.backend() == "jax":
            return self._jax_train_step(*args)
        before = ops.copy(self.optimizer.iterations)
        logs = super().train_step(*args)
        decay = self._step_decay(before, self.optimizer.iterations)
        for teacher, student in self._ema_pairs():
            teacher.assign(decay * teacher + (1.0 - decay) * ops.cast(student, teacher.dtype))
        return logs

    def _jax_train_step(self, state, data):
        # The optimizer's step counter in the state (`iterations` counts updates:
        # with gradient accumulation it is this counter // accumulation steps).
        counter = next(i for i, v in enumerate(self.optimizer.variables) if v is step_counter(self.optimizer))
        accumulation = self.optimizer.gradient_accumulation_steps or 1
        before = state[2][counter] // accumulation
        logs, state = super().train_step(state, data)
        trainable, non_trainable, optimizer_variables, metrics_variables = state
        position = {id(v): ("trainable", i) for i, v in enumerate(self.trainable_variables)}
        position.update({id(v): ("non_trainable", i) for i, v in enumerate(self.non_trainable_variables)})
        values = {"trainable": trainable, "non_trainable": list(non_trainable)}
        decay = self._step_decay(before, optimizer_variables[counter] // accumulation)
        for teacher, student in self._ema_pairs():
            kind, index = position[id(student)]
            _, teacher_index = position[id(teacher)]
            old = values["non_trainable"][teacher_index]
            values["non_trainable"][teacher_index] = decay * old + (1.0 - decay) * values[kind][index]
        return logs, (trainable, values["non_trainable"], optimizer_variables, metrics_variables)

    # --- Checkpoints --------------------------------------------------------------
    # The masking generator's state is saved with the weights, so that a run
    # resumed from a checkpoint (e.g. keras.callbacks.BackupAndRestore) draws
    # the same masks as one that never stopped.

    _SEED_KEY = "mask_seed_state"

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[self._SEED_KEY] = ops.convert_to_numpy(self.seed_generator.state)

    def load_own_variables(self, store):
        for i, variable in enumerate(own_variables(self)):
            variable.assign(store[f"{i}"])
        if self._SEED_KEY in store.keys():
            self.seed_generator.state.assign(store[self._SEED_KEY])

    # --- Export -------------------------------------------------------------------

    def export_backbone(self, which="teacher"):
        """A standalone `BATBackbone` with the student's or the teacher's weights."""
        if which not in ("student", "teacher"):
            raise UsageError(f"`which` must be 'student' or 'teacher'. Received: {which!r}")
        source = self.student if which == "student" else self.teacher
        backbone = BATBackbone(**{**self.encoder_config, "dropout": 0.0, "drop_path_rate": 0.0})
        backbone.set_weights(source.get_weights())
        return backbone

    def get_config(self):
        config = super().get_config()
        config.update({
            "encoder": self.encoder_config, "decoder_dim": self.decoder_dim,
            "decoder_depth": self.decoder_depth, "decoder_heads": self.decoder_heads,
            "decoder_mlp_ratio": self.decoder_mlp_ratio, "time_frames": self.time_frames,
            "num_views": self.num_views, "mask_ratio": self.mask_ratio,
            "ema_decay_start": self.ema_decay_start, "ema_decay_end": self.ema_decay_end,
            "ema_warmup_steps": self.ema_warmup_steps, "seed": self.seed,
            "frontend": keras.saving.serialize_keras_object(self.frontend) if self.frontend else None,
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("frontend") is not None:
            config["frontend"] = keras.saving.deserialize_keras_object(config["frontend"])
        return cls(**config)
