"""Training utilities: schedules, optimizer groups, losses and metrics."""

from keras_bat.training.losses import AsymmetricLoss, SoftmaxCrossEntropy, ctc_greedy_decode, ctc_loss
from keras_bat.training.metrics import (
    LogitF1Score,
    MeanAveragePrecision,
    average_precision,
    mean_average_precision,
)
from keras_bat.training.optimizers import ScaledAdamW, layer_scale, paper_adamw
from keras_bat.training.schedules import WarmupCosineDecay, ema_decay_schedule

__all__ = ["AsymmetricLoss", "LogitF1Score", "MeanAveragePrecision", "ScaledAdamW", "SoftmaxCrossEntropy",
           "WarmupCosineDecay", "average_precision", "ctc_greedy_decode", "ctc_loss", "ema_decay_schedule",
           "layer_scale", "mean_average_precision", "paper_adamw"]
