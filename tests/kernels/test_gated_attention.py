"""Fused gated attention: forward and all four gradients against the PyTorch
reference, over tail blocks, masks, offsets, strides, head dims and dtypes."""

import pytest
import torch

from keras_bat_kernels.gated_attention import gated_attention, gated_attention_reference

# Max error relative to the reference's largest magnitude, per input dtype.
TOLERANCE = {torch.float32: 1e-4, torch.float16: 3e-3, torch.bfloat16: 3e-2}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

CASES = {
    # name: (batch, queries, keys, heads, head_dim, key_lengths, key_offset, gate)
    "tails": (2, 37, 37, 2, 32, None, 0, True),
    "padding_and_offset": (2, 37, 45, 2, 64, [45, 20], 3, True),
    "no_gate_odd_head_dim": (2, 19, 33, 1, 48, [33, 17], 0, False),
    "row_without_keys": (2, 17, 20, 1, 32, [20, 2], 2, True),
    "head_dim_128": (1, 24, 40, 2, 128, [30], 5, True),
}


def _relative_error(actual, expected):
    return ((actual.float() - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=str)
@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_and_gradients_match_the_reference(case, dtype):
    batch, num_queries, num_keys, heads, head_dim, lengths, offset, with_gate = CASES[case]
    generator = torch.Generator().manual_seed(0)

    def tensor(tokens):
        return torch.randn(batch, tokens, heads, head_dim, generator=generator).to(DEVICE, dtype).requires_grad_()

    q, k, v = tensor(num_queries), tensor(num_keys), tensor(num_keys)
    gate = tensor(num_queries) if with_gate else None
    key_lengths = torch.tensor(lengths, device=DEVICE) if lengths else None
    out = gated_attention(q, k, v, gate, key_lengths, offset)
    expected = gated_attention_reference(q, k, v, gate, key_lengths, offset)
    assert out.dtype == dtype and out.shape == q.shape
    assert _relative_error(out, expected) <= TOLERANCE[dtype]
    upstream = torch.randn(expected.shape, generator=generator).to(DEVICE)
    inputs = [t for t in (q, k, v, gate) if t is not None]
    grads = torch.autograd.grad(out.float(), inputs, upstream)
    expected_grads = torch.autograd.grad(expected, inputs, upstream)
    for name, grad, expected_grad in zip("qkvg", grads, expected_grads):
        assert grad.dtype == dtype
        assert _relative_error(grad, expected_grad) <= TOLERANCE[dtype], f"d{name}"
    if case == "row_without_keys":  # the second sequence has no valid key: zeros, no NaN
        assert torch.all(out[1] == 0) and all(torch.isfinite(g).all() for g in grads)


def test_strided_views_of_a_fused_projection():
    # BAT slices q, k, v out of one (B, N, 3, H, D) projection without copying.
    qkv = torch.randn(2, 29, 3, 2, 32, device=DEVICE, requires_grad=True)
    gate = torch.randn(2, 29, 2, 32, device=DEVICE)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    assert not q.is_contiguous()
    lengths = torch.tensor([29, 11], device=DEVICE)
    out = gated_attention(q, k, v, gate, lengths)
    expected = gated_attention_reference(q, k, v, gate, lengths)
    assert _relative_error(out, expected) <= 1e-4
    (grad,) = torch.autograd.grad(out.sum(), qkv)
    (expected_grad,) = torch.autograd.grad(expected.sum(), qkv)
    assert _relative_error(grad, expected_grad) <= 1e-4


def test_block_sizes_do_not_change_the_result():
    q, k, v = (torch.randn(1, 50, 1, 32, device=DEVICE) for _ in range(3))
    small = gated_attention(q, k, v, block_m=16, block_n=16)
    large = gated_attention(q, k, v, block_m=32, block_n=64)
    assert _relative_error(small, large) <= 1e-5


def test_invalid_inputs_are_named():
    q = torch.randn(1, 4, 1, 8, device=DEVICE)
    with pytest.raises(ValueError, match="head_dim must be 16 to 128"):
        gated_attention(q, q, q)
    q = torch.randn(1, 4, 1, 32, device=DEVICE)
    with pytest.raises(TypeError, match="share one of"):
        gated_attention(q, q.half(), q.half())
    with pytest.raises(ValueError, match="key_offset"):
        gated_attention(q, q, q, key_offset=5)
    with pytest.raises(ValueError, match="key_lengths must be"):
        gated_attention(q, q, q, key_lengths=torch.tensor([1, 2]))


def test_benchmark_script_runs(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("kernel_benchmark", "benchmarks/kernels.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    if DEVICE == "cpu":
        results = benchmark.main(["--smoke", "--output", str(tmp_path / "kernels.json")])
        assert set(results["attention"][0]["results"]) == {"fused_triton", "sdpa_then_gate", "keras_ops_path"}
        assert results["log_mel"][0]["max_abs_difference"] <= 1e-4
        assert (tmp_path / "kernels.json").exists()
