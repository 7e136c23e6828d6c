"""Training utilities: schedules, optimizer groups, losses and metrics."""

from keras_bat.training.losses import AsymmetricLoss, SoftmaxCrossEntropy, ctc_greedy_decode, ctc_loss
from keras_bat.training.metrics import (
    ClassAccuracy,
    EventDecoder,
    LogitF1Score,
    MeanAveragePrecision,
    average_precision,
    cross_validation_summary,
    d_prime,
    error_rates,
    event_based_f1,
    frames_to_events,
    mean_average_precision,
    multilabel_scores,
    roc_auc,
)
from keras_bat.training.optimizers import ScaledAdamW, layer_scale, paper_adamw
from keras_bat.training.resume import TrainingBackup, fit_resumable
from keras_bat.training.schedules import WarmupCosineDecay

__all__ = [
    "AsymmetricLoss", "ClassAccuracy", "EventDecoder", "LogitF1Score", "MeanAveragePrecision", "ScaledAdamW",
    "SoftmaxCrossEntropy", "TrainingBackup", "WarmupCosineDecay", "average_precision",
    "cross_validation_summary", "ctc_greedy_decode", "ctc_loss", "d_prime", "error_rates",
    "event_based_f1", "fit_resumable", "frames_to_events", "layer_scale", "mean_average_precision",
    "multilabel_scores", "paper_adamw", "roc_auc",
]
