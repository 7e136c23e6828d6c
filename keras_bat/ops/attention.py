"""Gated multi-head attention: the one place that picks its implementation."""

import os

from keras import ops

_SWITCH_ENV = "KERAS_BAT_USE_KERNELS"


def resolve_use_kernels(use_kernels=None):
    """Reads the three-state kernel switch.

    Args:
        use_kernels: `None` (auto: environment variable `KERAS_BAT_USE_KERNELS`,
            else auto), `True` (required) or `False` (off).

    Returns:
        `None`, `True` or `False`.
    """
    if use_kernels is not None:
        if not isinstance(use_kernels, bool):
            raise TypeError(
                f"`use_kernels` must be None, True or False. Received: {use_kernels!r}"
            )
        return use_kernels
    value = os.environ.get(_SWITCH_ENV, "auto").strip().lower()
    choices = {"auto": None, "": None, "1": True, "on": True, "true": True,
               "0": False, "off": False, "false": False}
    if value not in choices:
        raise ValueError(
            f"{_SWITCH_ENV} must be one of auto, on, off. Received: {value!r}"
        )
    return choices[value]


def gated_attention(query, key, value, gate=None, key_mask=None, use_kernels=None):
    """Scaled dot-product attention with an optional sigmoid output gate.

    Computes `softmax(q k^T / sqrt(head_dim) + mask) v * sigmoid(gate)` per
    head, the attention of BAT's encoder and decoder blocks.

    Args:
        query: tensor `(batch, query_length, num_heads, head_dim)`.
        key: tensor `(batch, key_length, num_heads, head_dim)`.
        value: tensor `(batch, key_length, num_heads, head_dim)`.
        gate: optional tensor of gate logits shaped like `query`; the output
            is multiplied by `sigmoid(gate)`. `None` means no gate.
        key_mask: optional boolean tensor `(batch, key_length)`; `False` keys
            take no part in the attention. Every query row must keep at least
            one key.
        use_kernels: `None` (auto), `True` (require the fused kernel) or
            `False` (always the keras.ops path).

    Returns:
        Tensor `(batch, query_length, num_heads, head_dim)`.
    """
    if resolve_use_kernels(use_kernels) is True:
        raise RuntimeError(
            "use_kernels=True asks for the fused attention kernel, but no fused "
            "kernel is available for this backend and device; use "
            "use_kernels=None (auto) or False to take the keras.ops path."
        )
    mask = None
    if key_mask is not None:
        mask = ops.cast(key_mask, "bool")[:, None, None, :]  # B, 1, 1, S
    out = ops.dot_product_attention(query, key, value, mask=mask)
    if gate is not None:
        out = out * ops.sigmoid(gate)
    return out
