"""Gated multi-head attention: the one place that picks its implementation."""

from keras import ops
from keras.backend import standardize_dtype

from keras_bat.errors import UsageError
from keras_bat.ops.dispatch import use_kernel


def gated_attention(query, key, value, gate=None, key_mask=None, key_offset=0, bias=None, use_kernels=None,
                    key_lengths=None):
    """Scaled dot-product attention with an optional sigmoid output gate.

    Computes `softmax(q k^T / sqrt(head_dim) + mask) v * sigmoid(gate)` per
    head, the attention of BAT's encoder and decoder blocks. Under the torch
    backend with CUDA tensors the fused Triton kernel runs
    (`keras_bat_kernels.gated_attention`); elsewhere `keras.ops`
    (`dot_product_attention`, which on JAX with a GPU picks cuDNN's fused
    attention where it applies) followed by the gate.

    Args:
        query: tensor `(batch, query_length, num_heads, head_dim)`.
        key: tensor `(batch, key_length, num_heads, head_dim)`.
        value: tensor `(batch, key_length, num_heads, head_dim)`.
        gate: optional tensor of gate logits shaped like `query`; the output
            is multiplied by `sigmoid(gate)`. `None` means no gate.
        key_mask: optional boolean tensor `(batch, key_length)`; `False` keys
            take no part in the attention. With `use_kernels=True` the fused
            kernel takes padding masks (the valid keys first), which it reads
            back as lengths (a device-to-host sync); otherwise masks use the
            keras.ops path.
        key_offset: int, the first `key_offset` tokens of `key` and `value`
            are not keys (queries only, like VQT's query tokens).
        bias: optional tensor `(batch or 1, num_heads, query_length, keys)`
            added to the attention logits (over the keys after `key_offset`),
            e.g. BEATs' relative position bias. The fused kernel takes it
            with `use_kernels=True`; auto leaves it to the keras.ops path (not
            yet measured on a GPU).
        use_kernels: `None` (auto: the fused kernel for bfloat16 and
            float16 CUDA tensors with `key_lengths`, where it is the faster
            one: `fused_attention_pays`), `True` (require the fused kernel,
            float32, unpadded and masks too) or `False` (always the keras.ops
            path).
        key_lengths: optional int tensor `(batch,)`, the padding as lengths
            instead of `key_mask`: keys at index `>= key_lengths[b]` (counted
            from the first token, `key_offset` included) are padding. The
            fused kernel reads them as they are (no sync); the keras.ops path
            turns them into a mask.

    Returns:
        Tensor `(batch, query_length, num_heads, head_dim)`.
    """
    if key_mask is not None and key_lengths is not None:
        raise UsageError("Pass the padding as key_mask or as key_lengths, not both.")
    if use_kernel(query, use_kernels, "attention") and _kernel_takes(query, key_lengths, bias, use_kernels is True):
        lengths = key_lengths if key_mask is None else _padding_lengths(key_mask, key_offset, use_kernels is True)
        if key_mask is None or lengths is not None:
            from keras_bat_kernels.gated_attention import gated_attention as fused

            return fused(query, key, value, gate, lengths, key_offset, bias=bias)
    if key_lengths is not None:
        positions = ops.arange(ops.shape(key)[1], dtype="int32")
        key_mask = positions[None, :] < ops.cast(key_lengths, "int32")[:, None]
    if key_offset:
        key, value = key[:, key_offset:], value[:, key_offset:]
        if key_mask is not None:
            key_mask = key_mask[:, key_offset:]
    mask = None
    if key_mask is not None:
        mask = ops.cast(key_mask, "bool")[:, None, None, :]  # B, 1, 1, S
    if bias is not None and mask is not None:  # keras.ops takes one of them: fold the mask into the bias
        bias = ops.where(mask, bias, -6e4 if standardize_dtype(bias.dtype) == "float16" else -1e9)
        mask = None
    out = ops.dot_product_attention(query, key, value, bias=bias, mask=mask)
    if gate is not None:
        out = out * ops.sigmoid(gate)
    return out


def fused_attention_pays(dtype, key_lengths, bias=None):
    """Where `use_kernels=None` takes the fused attention kernel: where `benchmarks/gpu_check.sh`
    measures it faster than PyTorch's SDPA + gate, told from static facts alone: bfloat16 or
    float16 with the padding given as key lengths (the kernel skips the padded keys; SDPA with a
    mask leaves its flash path). Without padding SDPA's flash attention is faster, in float32 the
    kernel is slower, and a `key_mask` would have to be read back from the device. With an
    additive bias (BEATs) the kernel has not been measured against SDPA yet."""
    return standardize_dtype(dtype) in ("bfloat16", "float16") and key_lengths is not None and bias is None


def _kernel_takes(query, key_lengths, bias, required):
    from keras_bat_kernels.gated_attention import unsupported_reason

    if not required and not fused_attention_pays(query.dtype, key_lengths, bias):
        return False  # use_kernels=True runs it wherever it can
    reason = unsupported_reason(query)
    if reason is not None and required:
        raise UsageError(f"The fused attention kernel cannot take these inputs: {reason}.")
    return reason is None


def _padding_lengths(key_mask, key_offset, required):
    """Per-sequence key lengths of a padding mask (valid keys first), or
    `None` when the mask has another pattern."""
    if key_mask is None:
        return None
    import torch

    valid = key_mask[:, key_offset:].bool()
    counts = valid.sum(dim=1)
    prefix = torch.arange(valid.shape[1], device=valid.device)[None, :] < counts[:, None]
    if torch.equal(prefix, valid):
        return (counts + key_offset).to(torch.int32)
    if required:
        raise UsageError("The fused attention kernel takes padding masks (valid keys first, then padding); "
                         "this key_mask has another pattern. Use use_kernels=None or False.")
    return None
