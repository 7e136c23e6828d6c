"""Learning-rate and EMA schedules of the paper."""

import math

import keras
from keras import ops

from keras_bat.errors import UsageError


@keras.saving.register_keras_serializable(package="keras_bat")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0, then cosine decay, floored at `min_lr`.

    `lr(step) = max(min_lr, base_lr * factor(step))` with `factor = step /
    warmup_steps` during warmup and `0.5 * (1 + cos(pi * (step - warmup) /
    (total - warmup)))` after it, one value per optimizer step. The cosine is
    not clamped at `total_steps` (as in the reference scheduler).

    Args:
        base_lr: float, peak learning rate.
        warmup_steps: int, steps of the linear warmup.
        total_steps: int, steps until the cosine reaches its minimum.
        min_lr: float, floor of the learning rate. Defaults to `1e-6`.
    """

    def __init__(self, base_lr, warmup_steps, total_steps, min_lr=1e-6):
        if total_steps <= warmup_steps:
            raise UsageError(f"`total_steps` ({total_steps}) must exceed `warmup_steps` ({warmup_steps}).")
        self.base_lr = float(base_lr)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_lr = float(min_lr)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = step / max(self.warmup_steps, 1)
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
        factor = ops.where(step <= self.warmup_steps, warmup, cosine) if self.warmup_steps else cosine
        return ops.maximum(self.min_lr, self.base_lr * factor)

    def get_config(self):
        return {"base_lr": self.base_lr, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "min_lr": self.min_lr}
