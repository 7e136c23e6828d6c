"""Speech recognition probe: layer mix, upsampling, BiLSTM, CTC log-probabilities."""

import keras
from keras import ops

from keras_bat.convert import mapping
from keras_bat.heads.base import (HeadContract, LayerGateMixin, check_features, mix_layers, pool_layers,
                                  pooled_patch_summary)
from keras_bat.layers.base import Layer
from keras_bat.layers.dense import Dense
from keras_bat.layers.transformer import seeded_dropout


@keras.saving.register_keras_serializable(package="keras_bat")
class ASRHead(HeadContract, LayerGateMixin, Layer):
    """The paper's ASR probe.

    Softmax mix of all layers' patch tokens -> mean over frequency -> a
    transposed convolution that upsamples time by `upsample_factor` (160 ms
    patches -> 20 ms steps) -> a 2-layer bidirectional LSTM (dropout 0.2
    between layers) -> optional LayerNorm -> dropout -> linear -> log-softmax.

    Args:
        num_classes: int, CTC vocabulary size including the blank. Defaults to `29`.
        upsample_factor: int, time upsampling. Defaults to `8`.
        lstm_units: int, units per direction. Defaults to `512`.
        lstm_layers: int, stacked bidirectional layers. Defaults to `2`.
        lstm_dropout: float, dropout between LSTM layers. Defaults to `0.2`.
        use_norm: bool, LayerNorm after the LSTM. Defaults to `False`.
        dropout: float, dropout before the linear layer. Defaults to `0.0`.

    Call arguments:
        features: the backbone's output dict.

    Returns:
        Log-probabilities `(batch, time_patches * upsample_factor, num_classes)`.
    """

    tasks = ("ctc",)

    @classmethod
    def from_settings(cls, num_classes, task, backbone, use_norm=False, dropout=0.0, **settings):
        return cls(num_classes, use_norm=use_norm, dropout=dropout)

    def __init__(self, num_classes=29, upsample_factor=8, lstm_units=512, lstm_layers=2,
                 lstm_dropout=0.2, use_norm=False, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.upsample_factor = upsample_factor
        self.lstm_units = lstm_units
        self.lstm_layers = lstm_layers
        self.lstm_dropout = lstm_dropout
        self.use_norm = use_norm
        self.dropout = dropout
        # Recurrences run in float32, like the reference (autocast off).
        self.lstms = [
            keras.layers.Bidirectional(keras.layers.LSTM(lstm_units, return_sequences=True, dtype="float32"),
                                       dtype="float32", name=f"lstm_{i}")
            for i in range(lstm_layers)
        ]
        self.between_lstms = seeded_dropout(lstm_dropout)
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6, name="ln") if use_norm else None
        self.head_dropout = seeded_dropout(dropout)
        self.fc = Dense(num_classes, name="fc")

    def build(self, features_shape):
        check_features(features_shape, type(self).__name__)
        _, layers, dim = features_shape["cls_tokens"]
        self.add_layer_gate(layers)
        # Transposed convolution with stride == kernel: each step emits `factor` outputs.
        self.upsample_kernel = self.add_weight(
            shape=(dim, dim, self.upsample_factor), initializer="glorot_uniform", name="upsample_kernel")
        self.upsample_bias = self.add_weight(shape=(dim,), initializer="zeros", name="upsample_bias")
        width = dim
        for lstm in self.lstms:
            lstm.build((None, None, width))
            width = 2 * self.lstm_units
        if self.norm is not None:
            self.norm.build((None, None, width))
        self.fc.build((None, None, width))
        self.built = True

    def chunk_summary(self, features):
        return pooled_patch_summary(features, "frame")

    def call(self, features, training=None):
        check_features(features, "ASRHead")
        x = mix_layers(pool_layers(features, "frame"), self.gate())  # B, T, D
        x = ops.einsum("btd,doj->btjo", x, ops.cast(self.upsample_kernel, x.dtype))  # B, T, factor, D
        x = ops.reshape(x, (-1, x.shape[1] * self.upsample_factor, x.shape[-1]))
        x = ops.cast(x + ops.cast(self.upsample_bias, x.dtype), "float32")
        for i, lstm in enumerate(self.lstms):
            if i:
                x = self.between_lstms(x, training=training)
            x = lstm(x, training=training)
        if self.norm is not None:
            x = self.norm(x)
        logits = self.fc(self.head_dropout(x, training=training))
        return ops.log_softmax(ops.cast(logits, "float32"), axis=-1)

    def compute_output_shape(self, features_shape):
        batch, _, time_patches = features_shape["patch_tokens"][:3]
        steps = None if time_patches is None else time_patches * self.upsample_factor
        return (batch, steps, self.num_classes)

    def official_parameters(self):
        params = {"block_attention": mapping.Param(self.layer_logits),
                  "upsample.weight": mapping.Param(self.upsample_kernel),
                  "upsample.bias": mapping.Param(self.upsample_bias)}
        for i, lstm in enumerate(self.lstms):
            params.update(mapping.lstm("lstm", i, lstm))
        params.update(mapping.linear("fc", self.fc))
        if self.norm is not None:
            params.update(mapping.layer_norm("ln", self.norm))
        return params, {}

    def official_layers_and_dim(self, shape):
        return shape("block_attention")[0], shape("upsample.weight")[0]

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "upsample_factor": self.upsample_factor,
                       "lstm_units": self.lstm_units, "lstm_layers": self.lstm_layers,
                       "lstm_dropout": self.lstm_dropout, "use_norm": self.use_norm,
                       "dropout": self.dropout})
        return config
