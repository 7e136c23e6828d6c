"""AudioClassifier: optional frontend + BATBackbone + head, for probing and finetuning."""

import json
import os

import keras
from keras import ops

from keras_bat.convert.checkpoints import write_json, write_preset_metadata
from keras_bat.convert.hub import download_preset, is_hub_uri
from keras_bat.errors import UsageError
from keras_bat.heads.base import CLASSIFICATION_TASKS
from keras_bat.layers.chunk_merge import ChunkSummaries
from keras_bat.models.streaming import ChunkEncoder, HeadChunkSummary
from keras_bat.ops import no_gradients
from keras_bat.ops.keras_internals import load_weights_skipping, save_weights_skipping
from keras_bat.training.losses import AsymmetricLoss, SoftmaxCrossEntropy, ctc_loss, training_loss
from keras_bat.training.metrics import ClassAccuracy, LogitF1Score, MeanAveragePrecision
from keras_bat.training.optimizers import paper_adamw

TASKS = ("multiclass", "multilabel", "frame", "ctc")
TASK_CONFIG_FILE = "task.json"
TASK_WEIGHTS_FILE = "task.weights.h5"
LEGACY_TASK_FILE = "task.keras"  # the whole model in one file, as keras-bat 0.1 wrote task presets


def is_task_preset(folder):
    """Whether `folder` holds a task preset (`AudioClassifier.save_to_preset`)."""
    return any(os.path.isfile(os.path.join(folder, name)) for name in (TASK_CONFIG_FILE, LEGACY_TASK_FILE))


@keras.saving.register_keras_serializable(package="keras_bat")
class AudioClassifier(keras.Model):
    """A task model: frontend (optional) -> backbone -> head.

    Probing (the default) freezes the backbone: its variables are not
    trainable and no gradient is computed through it (except for VQT heads,
    whose query tokens are read inside the backbone). Finetuning
    (`freeze_backbone=False`) trains everything.

    Args:
        backbone: a `keras_bat.models.BATBackbone`, or `None` to train the
            head on precomputed features (dicts as the backbone returns them,
            e.g. from a `keras_bat.data.FeatureCache`).
        head: a head from `keras_bat.heads`.
        frontend: optional layer from waveforms to spectrograms (e.g.
            `LogMelSpectrogram(time_frames=1024)`); without it the model takes
            spectrograms.
        task: `"multiclass"` (softmax cross-entropy, integer or one-hot
            labels), `"multilabel"` (multi-hot labels), `"frame"` (frame-wise
            multi-label event detection, labels `(batch, time_patches,
            classes)`) or `"ctc"` (speech recognition with an `ASRHead`;
            labels `{"labels": (batch, length), "label_lengths": (batch,)}`, and
            optionally `"logit_lengths"` for inputs with padding).
        freeze_backbone: bool, probe (True) or finetune (False). Defaults to `True`.
        label_smoothing: float, for `"multiclass"`. Defaults to `0.0`.
        asymmetric_loss: bool, the paper's asymmetric loss instead of binary
            cross-entropy for multi-label tasks. Defaults to `True`.
        augmentation: optional `keras_bat.data.AudioAugmentation`, applied in
            training steps only: its waveform part before the frontend, its
            spectrogram part (time roll, mixup, SpecAugment) after it.
        label_names: optional list of str, the name of each output class
            (kept in the config, so presets and `.keras` files carry them).

    With a frontend, the model takes waveforms `(batch, samples)` or, as they
    are, spectrograms `(batch, frames, mel_bins)`.

    Example:
    >>> backbone = BATBackbone.from_preset("bat_base")
    >>> model = AudioClassifier(backbone, CGP(num_classes=50), frontend=LogMelSpectrogram(time_frames=512))
    >>> model.compile()  # the paper's probing optimizer, loss and metrics
    >>> model.fit(waveforms, labels, epochs=...)
    """

    def __init__(self, backbone, head, frontend=None, task="multiclass", freeze_backbone=True,
                 label_smoothing=0.0, asymmetric_loss=True, augmentation=None, label_names=None, **kwargs):
        super().__init__(**kwargs)
        _check_task(backbone, head, task)
        self.label_names = None if label_names is None else [str(name) for name in label_names]
        self.backbone = backbone
        self.head = head
        self.frontend = frontend
        self.task = task
        self.freeze_backbone = freeze_backbone
        self.label_smoothing = label_smoothing
        self.asymmetric_loss = asymmetric_loss
        self.augmentation = augmentation
        if backbone is not None:
            self.backbone.trainable = not freeze_backbone
        elif not freeze_backbone:
            raise UsageError("freeze_backbone=False (finetuning) needs a backbone.")

    def call(self, inputs, training=None):
        if self.backbone is None:  # precomputed features
            return self.head(inputs, training=training)
        x = self._spectrograms(inputs)
        reads_queries = getattr(self.head, "reads_query_tokens", False)
        if reads_queries:
            x = ops.convert_to_tensor(x)  # (a NumPy batch beside the tokens would be a mixed nested input)
            x = {"spectrogram": x, "query_tokens": self.head.batch_query_tokens(ops.shape(x)[0])}
        features = self.backbone(x, training=bool(training) and not self.freeze_backbone)
        if self.freeze_backbone and not reads_queries:
            features = {k: ops.stop_gradient(v) for k, v in features.items()}
        return self.head(features, training=training)

    def predict_long(self, inputs):
        """The model's outputs on a batch of clips, in inference mode, with memory that does
        not grow with the clips' length: the backbone runs one time chunk of every clip at a
        time and the head keeps only what its pooling needs of each chunk (`chunk_summary`,
        computed with the chunk's encoding on the device), then predicts from the merged
        summaries (`keras_bat.models.streaming`). Equal to `model(inputs)`: the clips are those
        the frontend makes, at its `time_frames` where it fixes them (to stream a recording
        whole, use `AudioTagger`). What still grows with the length is small: the inputs, and
        the frontend's transient memory for one clip (about 65 MB per minute of audio).

        Args:
            inputs: waveforms `(batch, samples)` (with a frontend) or
                spectrograms `(batch, frames, mels)`.

        Returns:
            The outputs as a NumPy array.
        """
        if self.backbone is None:
            raise UsageError("predict_long runs the backbone chunk by chunk; this model reads precomputed features.")
        if not self.built:  # heads create their weights on their first call
            self(self.example_input())
        # The frontend runs a clip at a time: its STFT takes several times the waveform's memory.
        spectrograms = ops.concatenate([self._spectrograms(inputs[i:i + 1]) for i in range(len(inputs))])
        encoder = self.chunk_encoder()
        keep = encoder.step.keep
        summaries = ChunkSummaries()
        for time_patches, outputs in encoder.chunks(spectrograms, self.streamed_query_tokens()):
            summaries.add({name: (value, keep.merges[name]) for name, value in outputs.items()}, time_patches)
        with no_gradients():  # else torch would keep the head's activations for a backward pass
            outputs = self.head.call_on_summary(summaries.result(), training=False)
        return keras.ops.convert_to_numpy(outputs)

    def chunk_encoder(self):
        """The `ChunkEncoder` of the backbone with the head's chunk summary (`HeadChunkSummary`,
        its `step.keep`), made once per model so that its compiled call is kept."""
        if getattr(self, "_chunk_encoder", None) is None:
            self._chunk_encoder = ChunkEncoder(self.backbone, HeadChunkSummary(self.head))
        return self._chunk_encoder

    def streamed_query_tokens(self):
        """The `(1, depth, query tokens, dim)` tokens a VQT head reads inside the backbone, as
        `ChunkEncoder` takes them, or `None` for a head that reads none."""
        return self.head.batch_query_tokens(1) if getattr(self.head, "reads_query_tokens", False) else None

    def probabilities(self, logits):
        """The task's probabilities of its logits: softmax over classes for `multiclass`,
        sigmoid per class for `multilabel` and `frame`."""
        if self.task not in CLASSIFICATION_TASKS:
            raise UsageError(f"The {self.task} task has no class probabilities.")
        logits = ops.cast(logits, "float32")
        return ops.softmax(logits, axis=-1) if self.task == "multiclass" else ops.sigmoid(logits)

    def quantize(self, mode=None, config=None, filters=None, **kwargs):
        """Quantizes the backbone's layers (`keras.Model.quantize`: `"int8"`, `"float8"`, ...);
        the head stays float: it holds few weights, and the prototypes' cosine similarities
        are the scores. The quantized layers are in the backbone's config, so `.keras` files
        load quantized; a task preset holds float weights (quantize after `from_preset`)."""
        if self.backbone is None:
            raise UsageError("This model reads precomputed features: it has no backbone to quantize.")
        if not self.built:
            self(self.example_input())
        self.backbone.quantize(mode, config=config, filters=filters, **kwargs)
        self.train_function = self.test_function = self.predict_function = None
        self._chunk_encoder = None
        self._post_quantize(mode)

    def _takes_waveforms(self, inputs):
        """Waveforms `(batch, samples)` go through the frontend; spectrograms and dicts do not."""
        return self.frontend is not None and not isinstance(inputs, dict) and len(inputs.shape) == 2

    def _spectrograms(self, inputs):
        return self.frontend(inputs) if self._takes_waveforms(inputs) else inputs

    # --- Augmentation (training steps only) ----------------------------------------

    def train_step(self, *args):
        if self.augmentation is None:
            return super().train_step(*args)
        # A backend branch outside ops/: Keras' JAX trainer hands train_step the state explicitly.
        if keras.backend.backend() != "jax":
            return super().train_step(self._augment(args[0]))
        # JAX: the augmentation's random state is part of the functional state.
        state, data = args
        trainable, non_trainable, optimizer_variables, metrics_variables = state
        mapping = list(zip(self.trainable_variables, trainable)) + list(zip(self.non_trainable_variables,
                                                                            non_trainable))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            data = self._augment(data)
        non_trainable = [scope.get_current_value(v) if scope.get_current_value(v) is not None else value
                         for v, value in zip(self.non_trainable_variables, non_trainable)]
        return super().train_step((trainable, non_trainable, optimizer_variables, metrics_variables), data)

    def _augment(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self._takes_waveforms(x):
            x = self.frontend(self.augmentation.augment_waveforms(x))
        if self.augmentation.uses_mixup:
            if self.task == "ctc":
                raise UsageError("Mixup cannot mix CTC transcripts; use it with classification tasks.")
            if self.task == "multiclass" and len(y.shape) == 1:
                y = ops.one_hot(ops.cast(y, "int32"), self.head.num_classes)
        if self.task == "ctc":
            x, _ = self.augmentation.augment_spectrograms(x, ops.zeros((ops.shape(x)[0], 1)))
        else:
            x, y = self.augmentation.augment_spectrograms(x, y)
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    # --- Training defaults ------------------------------------------------------

    def default_loss(self):
        if self.task == "multiclass":
            return SoftmaxCrossEntropy(self.label_smoothing)
        if self.task in ("multilabel", "frame"):
            if self.asymmetric_loss:
                return AsymmetricLoss()
            return keras.losses.BinaryCrossentropy(from_logits=True)
        return None  # ctc: see compute_loss

    def default_metrics(self):
        num_classes = self.head.num_classes
        if self.task == "multiclass":
            return [ClassAccuracy(name="accuracy")]
        if self.task == "multilabel":
            return [MeanAveragePrecision(num_classes, "macro"), LogitF1Score("macro")]
        if self.task == "frame":
            return [MeanAveragePrecision(num_classes, "micro", name="frame_micro_mAP"),
                    LogitF1Score("micro", name="frame_micro_f1")]
        return []

    def compile(self, optimizer="auto", loss="auto", metrics="auto", learning_rate=None, **kwargs):
        """Compiles with the paper's defaults where `"auto"` is given.

        Args:
            optimizer: `"auto"`: `paper_adamw` (lr 1e-3 probing, 5e-5 with
                0.75 layer decay finetuning), or any Keras optimizer. With a
                `mixed_float16` backbone it is wrapped in a
                `keras.optimizers.LossScaleOptimizer` (dynamic loss scaling).
            loss: `"auto"`: by task (softmax cross-entropy with label
                smoothing, asymmetric loss or BCE, CTC), or any Keras loss.
            metrics: `"auto"`: accuracy; macro mAP and F1; frame-wise micro
                mAP and F1; none for CTC.
            learning_rate: float or schedule for the `"auto"` optimizer.
            **kwargs: `keras.Model.compile` arguments.
        """
        if optimizer == "auto":
            if self.freeze_backbone:
                optimizer = paper_adamw(learning_rate or 1e-3)
            else:
                optimizer = paper_adamw(learning_rate or 5e-5, finetune=True, layer_decay=0.75,
                                        depth=self.backbone.depth)
        optimizer = keras.optimizers.get(optimizer)
        float16 = self.backbone is not None and any(
            layer.dtype_policy.name == "mixed_float16" for layer in self.backbone.layers)
        if float16 and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            # float16 gradients underflow without loss scaling (Keras wraps only models whose
            # own policy is mixed_float16; here the backbone's layers have it).
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        if loss == "auto":
            loss = self.default_loss()
        if metrics == "auto":
            metrics = self.default_metrics()
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if self.task != "ctc":
            return super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        if not isinstance(y, dict) or "label_lengths" not in y or "labels" not in y:
            raise UsageError(
                "The ctc task needs labels and their lengths: pass y as "
                "{'labels': (batch, max_length) int, 'label_lengths': (batch,) int}.")
        return training_loss(self, ctc_loss(y["labels"], y["label_lengths"], y_pred, y.get("logit_lengths")))

    def get_config(self):
        config = super().get_config()
        config.update({
            "backbone": keras.saving.serialize_keras_object(self.backbone) if self.backbone else None,
            "head": keras.saving.serialize_keras_object(self.head),
            "frontend": keras.saving.serialize_keras_object(self.frontend) if self.frontend else None,
            "task": self.task, "freeze_backbone": self.freeze_backbone,
            "label_smoothing": self.label_smoothing, "asymmetric_loss": self.asymmetric_loss,
            "augmentation": keras.saving.serialize_keras_object(self.augmentation) if self.augmentation else None,
            "label_names": self.label_names,
        })
        return config

    # --- Presets -------------------------------------------------------------------

    def save_to_preset(self, directory):
        """Writes the model as a task preset in keras-hub's layout: the backbone's preset files
        (`config.json`, `model.weights.h5`, see `EncoderModel.save_to_preset`), the frontend's
        config (`frontend.json`), `task.json` (the whole model's config: task, head, label
        names) and `task.weights.h5` (every weight but the backbone's), and `metadata.json`.
        A preset written under one backend loads under the others."""
        if self.backbone is None:
            raise UsageError("A task preset carries its backbone: put the head back on one first "
                             "(AudioClassifier(backbone, model.head, frontend=...)).")
        os.makedirs(directory, exist_ok=True)
        if not self.built:  # heads create their weights on the first call: make them before saving
            self(self.example_input())
        self.backbone.save_to_preset(directory, frontend=self.frontend)
        write_json(os.path.join(directory, TASK_CONFIG_FILE), keras.saving.serialize_keras_object(self))
        save_weights_skipping(self, os.path.join(directory, TASK_WEIGHTS_FILE), [self.backbone])
        write_preset_metadata(directory, self, task=self.task,
                              num_classes=getattr(self.head, "num_classes", None))
        legacy = os.path.join(directory, LEGACY_TASK_FILE)
        if os.path.exists(legacy):  # an earlier preset in the same folder
            os.remove(legacy)

    def example_input(self):
        """A zero input the model takes: with a frontend, a waveform of about a second (of
        whole patches' frames where the frontend keeps every frame), else one patch-high
        spectrogram."""
        if self.frontend is not None:
            samples = self.frontend.sample_rate
            if self.frontend.time_frames is None and self.backbone is not None:
                frames = -(-self.frontend.num_frames(samples) // self.backbone.patch_size) * self.backbone.patch_size
                samples = next(n for n in range(samples, samples + frames * self.frontend.hop_length)
                               if self.frontend.num_frames(n) == frames)
            return ops.zeros((1, samples), "float32")
        if self.backbone is None:
            raise UsageError("A head on precomputed features has no example input; call it on features first.")
        return ops.zeros((1, self.backbone.patch_size, self.backbone.num_mels), "float32")

    @classmethod
    def from_preset(cls, preset):
        """The model `save_to_preset` wrote, with its weights (not compiled: call `compile()`
        before training on), from its folder or a Hub URI (`hf://owner/repo[/subfolder]`)."""
        preset = os.fspath(preset)
        folder = download_preset(preset) if is_hub_uri(preset) else preset
        if not is_task_preset(folder):
            raise UsageError(
                f"{preset!r} holds no {TASK_CONFIG_FILE}: AudioClassifier.from_preset reads folders written by "
                "AudioClassifier.save_to_preset. For a backbone preset, build "
                "AudioClassifier(BATBackbone.from_preset(preset), head, ...).")
        if not os.path.isfile(os.path.join(folder, TASK_CONFIG_FILE)):  # written by keras-bat 0.1 as one file
            model = keras.saving.load_model(os.path.join(folder, LEGACY_TASK_FILE), compile=False)
        else:
            with open(os.path.join(folder, TASK_CONFIG_FILE)) as f:
                model = keras.saving.deserialize_keras_object(json.load(f))
            if isinstance(model, cls):
                model(model.example_input())  # the heads' weights exist once called
                model.backbone.load_preset_weights(folder)
                load_weights_skipping(model, os.path.join(folder, TASK_WEIGHTS_FILE), [model.backbone])
        if not isinstance(model, cls):
            raise UsageError(f"{preset} holds a {type(model).__name__}, not an {cls.__name__}.")
        return model

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("augmentation") is not None:  # registers AudioAugmentation in a process new to it
            import keras_bat.data.augment  # noqa: F401
        for key in ("backbone", "head", "frontend", "augmentation"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def _check_task(backbone, head, task):
    if task not in TASKS:
        raise UsageError(f"`task` must be one of {TASKS}. Received: {task!r}")
    pooling = getattr(head, "pooling", None)
    if task == "frame" and pooling != "frame":
        raise UsageError(f"The frame task needs a head with pooling='frame'. Received: "
                         f"{type(head).__name__} with pooling={pooling!r}.")
    if task in ("multiclass", "multilabel") and pooling == "frame":
        raise UsageError(f"A head with pooling='frame' predicts per time patch; use task='frame' "
                         f"(received task={task!r}).")
    tasks = getattr(head, "tasks", CLASSIFICATION_TASKS)
    if task not in tasks:
        raise UsageError(f"A {type(head).__name__} serves the tasks {tasks}, not {task!r} (the ctc task goes "
                         f"with an ASRHead).")
    reads_queries = getattr(head, "reads_query_tokens", False)
    if reads_queries and backbone is None:
        raise UsageError(f"A {type(head).__name__} reads its query tokens inside the backbone; it cannot train "
                         "on precomputed features.")
    if reads_queries:
        expected = (backbone.depth, backbone.num_query_tokens, backbone.dim)
        if expected != (head.depth, head.num_query_tokens, head.dim):
            raise UsageError(
                "The VQT head and the backbone disagree: build the backbone with "
                f"num_query_tokens={head.num_query_tokens} (depth {head.depth}, dim {head.dim}); "
                f"it has depth {backbone.depth}, num_query_tokens {backbone.num_query_tokens}, dim {backbone.dim}.")
