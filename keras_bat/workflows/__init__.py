"""Runnable workflows behind the `keras-bat` command and `recipes/`:
pretraining, probing, finetuning, embedding, and the demo."""

from keras_bat.workflows.config import DEFAULTS, DEMO_CONFIG, load_config, parse_overrides

__all__ = ["DEFAULTS", "DEMO_CONFIG", "load_config", "parse_overrides"]
