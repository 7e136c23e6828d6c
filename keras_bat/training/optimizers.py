"""AdamW with the paper's parameter groups and layer-wise learning-rate decay."""

import re

import keras

from keras_bat.errors import UsageError
from keras_bat.ops.keras_internals import adam_moments, uses_weight_decay, variable_index
from keras_bat.ops.optimizer_updates import adam_update_in_place, scale_in_place, updates_in_place

# Variables never decayed in probing (besides every 1-D variable).
PROBE_NO_DECAY = ("layer_logits", "prototypes", "query_tokens", "cls_token", "pos_embed")
# Variables never decayed in finetuning (besides every 1-D variable).
FINETUNE_NO_DECAY = ("cls_token", "pos_embed")
_BLOCK = re.compile(r"blocks_(\d+)/")
_EMBEDDINGS = ("patch_embed/", "chunk_tokens/")


def layer_scale(variable, depth, decay):
    """The layer-wise learning-rate scale of one variable.

    Embeddings (patch embedding, class token, positions) get `decay^(depth + 1)`,
    block `i` gets `decay^(depth - i)`, everything else (pre-norm, head) 1.
    """
    path = variable.path
    if any(part in path for part in _EMBEDDINGS):
        return decay ** (depth + 1)
    match = _BLOCK.search(path)
    if match:
        return decay ** (depth - int(match.group(1)))
    return 1.0


@keras.saving.register_keras_serializable(package="keras_bat")
class ScaledAdamW(keras.optimizers.AdamW):
    """AdamW with the paper's parameter groups, configured by names only.

    - No weight decay for 1-D variables (biases, norms, gates) and for
      variables whose name is in `no_decay_names`.
    - With `layer_decay`, each variable's learning rate (and its decoupled
      weight decay, as PyTorch parameter groups with `lr_scale`) is scaled by
      `layer_scale(variable, depth, layer_decay)`.

    Args:
        no_decay_names: variable names (last path part) never decayed.
            Defaults to the probing set: layer gates, prototypes, query
            tokens, class token, positions.
        layer_decay: float or `None`, layer-wise learning-rate decay (0.75
            in the paper's finetuning). Defaults to `None`.
        depth: int, encoder blocks; required with `layer_decay`.
        **kwargs: `keras.optimizers.AdamW` arguments (`learning_rate`,
            `weight_decay`, `beta_2`, `clipnorm`, `gradient_accumulation_steps`, ...).
    """

    def __init__(self, no_decay_names=PROBE_NO_DECAY, layer_decay=None, depth=None, **kwargs):
        if layer_decay is not None and depth is None:
            raise UsageError("`layer_decay` needs `depth`, the number of encoder blocks.")
        super().__init__(**kwargs)
        self.no_decay_names = tuple(no_decay_names)
        self.layer_decay = layer_decay
        self.depth = depth

    def build(self, var_list):
        # Keras matches `var_names` as regular expressions against each variable's name.
        self.exclude_from_weight_decay(var_list=[v for v in var_list if len(v.shape) <= 1],
                                       var_names=[f"^{re.escape(name)}$" for name in self.no_decay_names])
        super().build(var_list)
        # Per-variable scales by index: backends may hand update_step their raw variables.
        self._lr_scales = [1.0 if self.layer_decay is None else layer_scale(v, self.depth, self.layer_decay)
                           for v in var_list]

    def _scale(self, variable, learning_rate):
        scale = self._lr_scales[variable_index(self, variable)]
        return learning_rate if scale == 1.0 else learning_rate * scale

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = self._scale(variable, learning_rate)
        if not updates_in_place() or self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = keras.ops.cast(self.iterations + 1, dtype)
        alpha = (keras.ops.cast(learning_rate, dtype) * keras.ops.sqrt(1 - keras.ops.power(self.beta_2, step))
                 / (1 - keras.ops.power(self.beta_1, step)))
        adam_update_in_place(variable, keras.ops.cast(gradient, dtype), *adam_moments(self, variable), alpha,
                             self.beta_1, self.beta_2, self.epsilon)

    def _apply_weight_decay(self, variables):  # a private hook: see keras_bat.ops.keras_internals
        if self.weight_decay is None:
            return
        for variable in variables:
            if uses_weight_decay(self, variable):
                lr = keras.ops.cast(self._scale(variable, self.learning_rate), variable.dtype)
                wd = keras.ops.cast(self.weight_decay, variable.dtype)
                if updates_in_place():
                    scale_in_place(variable, 1 - wd * lr)
                else:
                    variable.assign(variable - variable * wd * lr)

    def get_config(self):
        config = super().get_config()
        config.update({"no_decay_names": list(self.no_decay_names), "layer_decay": self.layer_decay,
                       "depth": self.depth})
        return config


def paper_adamw(learning_rate, finetune=False, weight_decay=0.05, layer_decay=None, depth=None, **kwargs):
    """AdamW as the paper configures it for probing or finetuning.

    Args:
        learning_rate: float or `LearningRateSchedule`.
        finetune: bool. Probing: beta_2 0.999, no decay for gates, prototypes,
            query tokens, class token, positions and 1-D variables.
            Finetuning: beta_2 0.95, no decay for class token, positions and
            1-D variables, optional `layer_decay`.
        weight_decay: float. Defaults to `0.05`.
        layer_decay: float or `None`, finetuning's layer-wise decay.
        depth: int, encoder blocks (with `layer_decay`).
        **kwargs: further `ScaledAdamW` arguments.

    Returns:
        A `ScaledAdamW`.
    """
    kwargs.setdefault("beta_2", 0.95 if finetune else 0.999)
    return ScaledAdamW(no_decay_names=FINETUNE_NO_DECAY if finetune else PROBE_NO_DECAY,
                       layer_decay=layer_decay, depth=depth, learning_rate=learning_rate,
                       weight_decay=weight_decay, **kwargs)
