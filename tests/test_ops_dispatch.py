"""Where the Triton kernels run: CUDA tensors under the torch backend; the
keras.ops path elsewhere; a clear error when they are required and cannot run.
With the kernels on (Triton's interpreter on CPU), BAT computes what it
computes with them off."""

import keras
import numpy as np
import pytest

from helpers import to_numpy
from keras_bat import BATBackbone, LogMelSpectrogram
from keras_bat.models import BEATsBackbone
from keras_bat.ops import gated_attention, kernel_unavailable_reason

TORCH = keras.backend.backend() == "torch"
needs_torch = pytest.mark.skipif(not TORCH, reason="the Triton kernels run under torch: tested in the torch pass")
CUDA = TORCH and __import__("torch").cuda.is_available()


def _on_cpu():
    """Places new tensors on the CPU, also on a machine with a GPU."""
    return keras.device("cpu")


def _reference(q, k, v, gate, key_mask, bias=0.0):
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1]) + bias
    scores = np.where(key_mask[:, None, None, :], scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", weights, v) / (1 + np.exp(-gate))


def test_auto_takes_the_keras_ops_path_off_cuda(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    rng = np.random.default_rng(0)
    q, k, v, gate = (rng.normal(size=(2, 7, 2, 16)).astype("float32") for _ in range(4))
    key_mask = np.arange(7)[None, :] < np.array([[7], [4]])
    with _on_cpu():
        out = to_numpy(gated_attention(q, k, v, gate, key_mask))
        reason = kernel_unavailable_reason(keras.ops.convert_to_tensor(q))
    np.testing.assert_allclose(out, _reference(q, k, v, gate, key_mask), atol=1e-5)
    assert reason is not None and ("CUDA" in reason if TORCH else "torch backend" in reason)


@pytest.mark.skipif(not CUDA, reason="CUDA only: benchmarks/gpu_check.sh runs it on a GPU machine")
def test_auto_takes_the_kernel_on_cuda():
    import torch

    q = torch.randn(2, 7, 2, 16, device="cuda")
    assert kernel_unavailable_reason(q) is None


def test_additive_bias_with_a_key_mask():
    rng = np.random.default_rng(1)
    q, k, v, gate = (rng.normal(size=(2, 7, 2, 16)).astype("float32") for _ in range(4))
    bias = rng.normal(size=(2, 2, 7, 7)).astype("float32")
    key_mask = np.arange(7)[None, :] < np.array([[7], [4]])
    out = to_numpy(gated_attention(q, k, v, gate, key_mask, bias=bias))
    np.testing.assert_allclose(out, _reference(q, k, v, gate, key_mask, bias), atol=1e-5)


def test_required_kernel_without_cuda_raises_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    expected = "not CUDA" if TORCH else "torch backend"
    with _on_cpu():
        q = keras.ops.convert_to_tensor(np.zeros((1, 3, 2, 16), "float32"))
        message = f"use_kernels=True asks for the fused attention kernel, but .*{expected}"
        with pytest.raises(RuntimeError, match=message):
            gated_attention(q, q, q, use_kernels=True)
        with pytest.raises(RuntimeError, match="fused log-mel kernel"):
            LogMelSpectrogram(use_kernels=True)(np.zeros((1, 4000), "float32"))
        monkeypatch.setenv("KERAS_BAT_USE_KERNELS", "on")
        with pytest.raises(RuntimeError, match="KERAS_BAT_USE_KERNELS"):
            gated_attention(q, q, q)


@needs_torch
def test_masks_the_kernel_cannot_take():
    q = keras.ops.convert_to_tensor(np.random.default_rng(0).normal(size=(1, 5, 1, 16)).astype("float32"))
    holes = keras.ops.convert_to_tensor(np.array([[True, False, True, True, False]]))
    with pytest.raises(ValueError, match="padding masks"):
        gated_attention(q, q, q, key_mask=holes, use_kernels=True)
    small = keras.ops.convert_to_tensor(np.zeros((1, 5, 1, 8), "float32"))
    with pytest.raises(ValueError, match="head_dim 8"):
        gated_attention(small, small, small, use_kernels=True)


def _backbone_gradients(backbone, inputs):
    import torch

    features = backbone(inputs)
    weights = [v.value for v in backbone.trainable_weights]
    loss = (features["cls_tokens"] ** 2).sum() + features["patch_tokens"].mean()
    grads = torch.autograd.grad(loss, weights)
    return {k: to_numpy(v) for k, v in features.items()}, [g.detach().cpu().numpy() for g in grads]


@needs_torch
@pytest.mark.parametrize("num_query_tokens", [0, 2])
@pytest.mark.parametrize("encoder", ["bat", "beats"])
def test_backbone_forward_and_backward_equal_with_kernels_on_and_off(encoder, num_query_tokens):
    # BEATs: the fused kernel with its additive relative position bias (and the bias's gradient).
    config = dict(dim=64, depth=2, num_heads=2, chunk_time_patches=4, use_padding_mask=True,
                  num_query_tokens=num_query_tokens)
    if encoder == "beats":
        config.update(ffn_dim=64, embed_dim=16, conv_pos=8, conv_pos_groups=2)
    kind = BATBackbone if encoder == "bat" else BEATsBackbone
    fused, plain = kind(**config, use_kernels=True), kind(**config, use_kernels=False)
    rng = np.random.default_rng(0)
    padding = np.ones((2, 96), "float32")
    # The second clip is shorter: padded keys, and a short last chunk for both. BEATs has no class
    # token, so a chunk of padding alone would have no key at all, rows that the two paths fill
    # differently (zeros, an average of padding) and whose outputs are padding: it keeps 5 patches.
    padding[1, 40 if encoder == "bat" else 72:] = 0
    inputs = {"spectrogram": rng.uniform(size=(2, 96, 128)).astype("float32"), "padding_mask": padding}
    if num_query_tokens:
        inputs["query_tokens"] = rng.normal(size=(2, 2, num_query_tokens, 64)).astype("float32")
    plain(inputs)
    fused(inputs)
    fused.set_weights(plain.get_weights())
    inputs = {k: keras.ops.convert_to_tensor(v) for k, v in inputs.items()}
    fused_features, fused_grads = _backbone_gradients(fused, inputs)
    plain_features, plain_grads = _backbone_gradients(plain, inputs)
    for key in plain_features:
        np.testing.assert_allclose(fused_features[key], plain_features[key], atol=2e-5, rtol=1e-4)
    # Float32 rounding of two summation orders, through LayerNorms and two
    # blocks: within 5e-4 of each gradient's largest entry (measured <= 1.3e-4).
    for variable, fused_grad, plain_grad in zip(plain.trainable_weights, fused_grads, plain_grads):
        if variable.path.endswith("k_proj/bias"):  # BEATs' key bias: zero gradient but for rounding
            assert np.abs(plain_grad).max() < 1e-6 and np.abs(fused_grad).max() < 1e-6
            continue
        np.testing.assert_allclose(fused_grad, plain_grad, atol=5e-4 * np.abs(plain_grad).max() + 1e-8)


@needs_torch
def test_frontend_equal_with_kernels_on_and_off():
    waveforms = np.random.default_rng(0).normal(size=(2, 12000)).astype("float32")
    waveforms[1] *= 1e-3
    fused = to_numpy(LogMelSpectrogram(time_frames=64, use_kernels=True)(waveforms))
    plain = to_numpy(LogMelSpectrogram(time_frames=64, use_kernels=False)(waveforms))
    np.testing.assert_allclose(fused, plain, atol=1e-5)


def test_padding_as_lengths_equals_padding_as_a_mask():
    rng = np.random.default_rng(2)
    q, k, v, gate = (rng.normal(size=(2, 9, 2, 16)).astype("float32") for _ in range(4))
    lengths = np.array([9, 5], "int32")
    key_mask = np.arange(9)[None, :] < lengths[:, None]
    expected = _reference(q, k[:, 2:], v[:, 2:], gate, key_mask[:, 2:])
    out = to_numpy(gated_attention(q, k, v, gate, key_lengths=lengths, key_offset=2, use_kernels=False))
    np.testing.assert_allclose(out, expected, atol=1e-5)
    with pytest.raises(ValueError, match="not both"):
        gated_attention(q, k, v, gate, key_mask=key_mask, key_lengths=lengths)


@needs_torch
def test_encoder_passes_the_chunking_lengths_to_every_block(monkeypatch):
    # The padding is read once, as lengths, by the chunking: no block turns a
    # mask back into lengths (a device-to-host sync and a torch.compile break).
    import keras_bat.ops.attention as attention

    def refuse(*args, **kwargs):
        raise AssertionError("a block read its padding back from a mask")

    monkeypatch.setattr(attention, "_padding_lengths", refuse)
    backbone = BATBackbone(dim=32, depth=2, num_heads=2, chunk_time_patches=4, use_padding_mask=True,
                           num_query_tokens=2, use_kernels=True)
    padding = np.ones((2, 96), "float32")
    padding[1, 40:] = 0
    features = backbone({"spectrogram": np.random.default_rng(0).uniform(size=(2, 96, 128)).astype("float32"),
                         "padding_mask": padding, "query_tokens": np.zeros((2, 2, 2, 32), "float32")})
    assert np.isfinite(to_numpy(features["cls_tokens"])).all()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("padding", ["lengths", "mask", "none"])
def test_auto_takes_the_fused_attention_only_where_it_is_measured_faster(monkeypatch, dtype, padding):
    # benchmarks/gpu_check.sh: the fused kernel beats SDPA + gate only on padded bfloat16 / float16
    # batches. The choice comes from static facts; a device that can run the kernel is simulated.
    import keras_bat.ops.attention as attention

    taken = []
    monkeypatch.setattr(attention, "use_kernel", lambda *args: True)
    monkeypatch.setattr(attention, "_kernel_takes",
                        lambda query, key_lengths, bias, required: taken.append(attention.fused_attention_pays(
                            query.dtype, key_lengths, bias)) or False)
    q = keras.ops.ones((2, 5, 2, 16), dtype=dtype)
    lengths = {"lengths": np.array([5, 3], "int32"), "mask": None, "none": None}[padding]
    key_mask = np.arange(5)[None, :] < np.array([[5], [3]]) if padding == "mask" else None
    gated_attention(q, q, q, key_mask=key_mask, key_lengths=lengths)
    gated_attention(q, q, q, key_mask=key_mask, key_lengths=lengths, bias=keras.ops.zeros((1, 2, 5, 5)))
    assert taken == [dtype != "float32" and padding == "lengths", False]  # with a bias: not measured yet


def test_unpadded_chunks_give_the_blocks_no_lengths(monkeypatch):
    # Whole chunks without a padding mask: the blocks attend unmasked (SDPA's flash path on a GPU,
    # and no fused kernel in auto); a padding mask or a short last chunk gives them lengths.
    import keras_bat.layers.transformer as transformer

    seen = []
    original = transformer.gated_attention
    monkeypatch.setattr(transformer, "gated_attention",
                        lambda *args, **kwargs: seen.append(kwargs.get("key_lengths") is None) or original(*args,
                                                                                                           **kwargs))
    rng = np.random.default_rng(0)
    whole = BATBackbone(dim=32, depth=2, num_heads=2, chunk_time_patches=4)
    whole(rng.uniform(size=(2, 128, 128)).astype("float32"))  # 8 time patches: 2 whole chunks
    assert seen == [True, True]
    seen.clear()
    whole(rng.uniform(size=(2, 96, 128)).astype("float32"))  # 6 time patches: a short last chunk
    assert seen == [False, False]
    seen.clear()
    masked = BATBackbone(dim=32, depth=2, num_heads=2, chunk_time_patches=4, use_padding_mask=True)
    masked({"spectrogram": rng.uniform(size=(2, 128, 128)).astype("float32"),
            "padding_mask": np.ones((2, 128), "float32")})
    assert seen == [False, False]


@pytest.mark.skipif(not CUDA, reason="CUDA only: benchmarks/gpu_check.sh runs it on a GPU machine")
def test_padded_encoder_step_on_cuda_never_waits_for_the_device():
    import torch

    backbone = BATBackbone(dim=64, depth=2, num_heads=2, chunk_time_patches=4, use_padding_mask=True,
                           use_kernels=True)
    padding = torch.ones(2, 96, device="cuda")
    padding[1, 40:] = 0
    inputs = {"spectrogram": torch.rand(2, 96, 128, device="cuda"), "padding_mask": padding}
    backbone(inputs)  # builds the weights
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        features = backbone(inputs)
        loss = features["cls_tokens"].square().sum()
        torch.autograd.grad(loss, [w.value for w in backbone.trainable_weights])
    finally:
        torch.cuda.set_sync_debug_mode("default")


@needs_torch
def test_required_kernel_without_triton_says_so(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else find_spec(name, *a))
    q = keras.ops.convert_to_tensor(np.zeros((1, 3, 2, 16), "float32"))
    message = r"fused attention kernel, but Triton is not installed \(pip install triton\)"
    with pytest.raises(RuntimeError, match=message):
        gated_attention(q, q, q, use_kernels=True)
    np.testing.assert_allclose(to_numpy(gated_attention(q, q, q)), 0.0)  # auto: the keras.ops path
