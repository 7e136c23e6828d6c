"""The projection layer of keras-bat's blocks."""

import keras

from keras_bat.ops import linear


@keras.saving.register_keras_serializable(package="keras_bat")
class Dense(keras.layers.Dense):
    """`keras.layers.Dense` (same weights, config and checkpoints) whose
    projection runs through `linear`, the fused product-and-bias of the
    torch backend."""

    def quantize(self, mode=None, type_check=True, config=None):
        # Keras quantizes subclasses of Dense only when told to: this one changes `call` alone, and
        # calls Dense's own for quantized layers.
        super().quantize(mode, type_check=False, config=config)

    def call(self, inputs, training=None):
        if self.lora_enabled or self.quantization_mode:
            return super().call(inputs, training=training)
        x = linear(inputs, self.kernel, self.bias)
        return x if self.activation is None else self.activation(x)
