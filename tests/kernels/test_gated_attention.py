"""Fused gated attention: forward and all four gradients against the PyTorch
reference, over tail blocks, masks, offsets, strides, head dims and dtypes."""

import json
from pathlib import Path

import pytest
import torch
import triton
import triton.language as tl

from keras_bat_kernels import gated_attention as module
from keras_bat_kernels.gated_attention import gated_attention, gated_attention_reference

# Max error relative to the reference's largest magnitude, per input dtype.
TOLERANCE = {torch.float32: 1e-4, torch.float16: 3e-3, torch.bfloat16: 3e-2}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ROOT = Path(__file__).resolve().parents[2]
TILE_TOKENS = 300 if DEVICE == "cuda" else 100

CASES = {
    # name: (batch, queries, keys, heads, head_dim, key_lengths, key_offset, gate)
    "tails": (2, 37, 37, 2, 32, None, 0, True),
    "padding_and_offset": (2, 37, 45, 2, 64, [45, 20], 3, True),
    "no_gate_odd_head_dim": (2, 19, 33, 1, 48, [33, 17], 0, False),
    "row_without_keys": (2, 17, 20, 1, 32, [20, 2], 2, True),
    "head_dim_128": (1, 24, 40, 2, 128, [30], 5, True),
    # many query and key tiles, so the online softmax and the dK/dV sums run over
    # several blocks: 5 tiles of 64 on a GPU, 7 of the interpreter's 16 on a CPU
    "many_tiles": (2, *[TILE_TOKENS] * 2, 2, 64, [TILE_TOKENS, TILE_TOKENS * 4 // 7], 0, True),
    "head_dim_96": (1, 150, 161, 2, 96, [140], 1, True),
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


@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=str)
@pytest.mark.parametrize("case", ["padding_and_offset", "row_without_keys", "many_key_blocks"])
def test_one_pass_backward_with_atomic_dq_equals_two_passes(case, dtype):
    """dQ added by the key blocks (one backward kernel) against the reference and the two-kernel
    backward; with a bias too (its gradient comes from the same kernel)."""
    cases = dict(CASES, many_key_blocks=(1, 70, 90, 2, 32, [83], 2, True))  # 6 key blocks add into each dQ row
    batch, num_queries, num_keys, heads, head_dim, lengths, offset, with_gate = cases[case]
    generator = torch.Generator().manual_seed(2)

    def tensor(*shape):
        return torch.randn(*shape, generator=generator).to(DEVICE, dtype).requires_grad_()

    q, gate = tensor(batch, num_queries, heads, head_dim), tensor(batch, num_queries, heads, head_dim)
    k, v = tensor(batch, num_keys, heads, head_dim), tensor(batch, num_keys, heads, head_dim)
    bias = tensor(1, heads, num_queries, num_keys - offset).float().detach().requires_grad_()
    key_lengths = torch.tensor(lengths, device=DEVICE) if lengths else None
    upstream = torch.randn(q.shape, generator=generator).to(DEVICE)
    inputs = (q, k, v, gate, bias)
    expected = gated_attention_reference(q, k, v, gate, key_lengths, offset, bias=bias)
    expected_grads = torch.autograd.grad(expected, inputs, upstream)
    grads = {}
    for one_pass in (False, True):
        out = gated_attention(q, k, v, gate, key_lengths, offset, bias=bias, dq_by_atomics=one_pass)
        grads[one_pass] = torch.autograd.grad(out.float(), inputs, upstream)
    for name, one_pass, two_passes, expected_grad in zip("qkvgb", grads[True], grads[False], expected_grads):
        assert one_pass.dtype == two_passes.dtype
        assert _relative_error(one_pass, expected_grad) <= TOLERANCE[dtype], f"d{name}"
        assert _relative_error(one_pass, two_passes.float()) <= TOLERANCE[dtype] / 4, f"d{name}"


@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=str)
@pytest.mark.parametrize("bias_batch", [1, 2], ids=["bias_over_the_batch", "bias_per_sequence"])
def test_additive_bias_forward_and_gradients_match_the_reference(bias_batch, dtype):
    # BEATs' relative position bias: (batch or 1, heads, queries, keys after the offset), with
    # padding and query tokens in front; its gradient too (BEATs learns it when finetuned).
    batch, num_queries, num_keys, heads, head_dim, offset = 2, 37, 41, 2, 32, 3
    generator = torch.Generator().manual_seed(1)

    def tensor(*shape):
        return torch.randn(*shape, generator=generator).to(DEVICE, dtype).requires_grad_()

    q, gate = tensor(batch, num_queries, heads, head_dim), tensor(batch, num_queries, heads, head_dim)
    k, v = tensor(batch, num_keys, heads, head_dim), tensor(batch, num_keys, heads, head_dim)
    bias = (3 * torch.randn(bias_batch, heads, num_queries, num_keys - offset, generator=generator)).to(
        DEVICE).requires_grad_()  # float32, large enough to reorder the softmax
    lengths = torch.tensor([41, 20], device=DEVICE)
    out = gated_attention(q, k, v, gate, lengths, offset, bias=bias)
    expected = gated_attention_reference(q, k, v, gate, lengths, offset, bias=bias)
    assert _relative_error(out, expected) <= TOLERANCE[dtype]
    assert _relative_error(out, gated_attention_reference(q, k, v, gate, lengths, offset)) > 0.1  # the bias counts
    upstream = torch.randn(expected.shape, generator=generator).to(DEVICE)
    inputs = (q, k, v, gate, bias)
    grads = torch.autograd.grad(out.float(), inputs, upstream)
    expected_grads = torch.autograd.grad(expected, inputs, upstream)
    for name, grad, expected_grad in zip(("q", "k", "v", "gate", "bias"), grads, expected_grads):
        assert grad.shape == expected_grad.shape and grad.dtype == (bias.dtype if name == "bias" else dtype)
        assert _relative_error(grad, expected_grad) <= TOLERANCE[dtype], f"d{name}"
    # A bias that asks for no gradient (a frozen table) leaves the others' gradients as they are.
    frozen = gated_attention(q, k, v, gate, lengths, offset, bias=bias.detach())
    assert torch.equal(torch.autograd.grad(frozen.float(), q, upstream)[0], grads[0])
    with pytest.raises(ValueError, match="bias must be"):
        gated_attention(q, k, v, gate, lengths, offset, bias=bias[:, :, :, 1:])


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


@triton.jit
def _store_tile_offsets(OUT, sequence, s_b, s_n, s_h, s_d):
    tokens = tl.arange(0, 16)
    dims = tl.arange(0, 16)
    offsets = module._tile_offsets(tl.program_id(0) + sequence, tl.program_id(0) + 1, s_b, s_n, s_h, s_d,
                                   tokens, dims)
    tl.store(OUT + tokens[:, None] * 16 + dims[None, :], offsets)


def test_tile_offsets_are_64_bit_where_they_must_be():
    # A (B, N, 3, H, D) fused projection of 513 tokens, 12 heads of 64 has a
    # batch stride of 2.4 million: sequence 1900 starts past 2**31 elements.
    strides = (513 * 3 * 12 * 64, 3 * 12 * 64, 64, 1)
    out = torch.zeros(16, 16, dtype=torch.int64, device=DEVICE)
    _store_tile_offsets[(1,)](out, 1900, *strides)
    tokens, dims = torch.arange(16)[:, None], torch.arange(16)[None, :]
    expected = 1900 * strides[0] + 1 * strides[2] + tokens * strides[1] + dims
    assert expected.min() > 2**31
    assert torch.equal(out.cpu(), expected)
    # Within one sequence offsets stay 32-bit: a sequence spanning 2**31 elements is refused.
    class HugeSequence:  # the shape and strides alone (the memory would not fit a test machine)
        shape = (1, 2, 1, 16)

        def stride(self):
            return (2**32, 2**31, 16, 1)

    with pytest.raises(ValueError, match="spans 2\\*\\*31 elements"):
        module._check_sequence_offsets(HugeSequence())
    module._check_sequence_offsets(torch.zeros(3, 4, 2, 16))


def test_batch_and_heads_run_on_the_unbounded_grid_axis():
    grid = module.attention_grid(batch_heads=6000 * 12, tokens=1000, block=16)
    assert grid == (72000, 63)  # axis 0 takes up to 2**31 - 1 programs, the others 65535


@pytest.mark.parametrize("block", [8, 48, 512, 16.0])
def test_invalid_block_sizes_are_refused(block):
    q = torch.randn(1, 20, 1, 32, device=DEVICE)
    with pytest.raises(ValueError, match="block_m must be a power of two from 16 to 256"):
        gated_attention(q, q, q, block_m=block)
    with pytest.raises(ValueError, match="block_n must be"):
        gated_attention(q, q, q, block_n=block)


def test_forward_without_gradients_writes_no_backward_state():
    q, k, v, gate = (torch.randn(2, 40, 2, 32, device=DEVICE) for _ in range(4))
    launcher = module._Launcher(q.device, 32, q.dtype, None, None)
    out, attended, lse = module._forward(q, k, v, gate, None, 0, launcher, for_backward=False)
    assert attended is None and lse is None
    out_for_backward, attended, lse = module._forward(q, k, v, gate, None, 0, launcher, for_backward=True)
    assert torch.equal(out, out_for_backward) and attended.shape == q.shape and lse.shape == (2, 2, 40)
    with torch.no_grad():
        assert torch.equal(gated_attention(q.requires_grad_(), k, v, gate), out)


@pytest.mark.parametrize("with_gate", [True, False])
def test_gate_backward_kernel_equals_its_formulas(with_gate):
    generator = torch.Generator().manual_seed(0)
    attended, gate = (torch.randn(2, 37, 3, 48, generator=generator).to(DEVICE) for _ in range(2))
    d_out = torch.randn(2, 37, 1, 48, generator=generator).to(DEVICE).expand(-1, -1, 3, -1)  # strided upstream
    d_attended, d_gate, delta = module._gate_backward_pass(d_out, attended, gate if with_gate else None,
                                                           torch.float32)
    sig = torch.sigmoid(gate) if with_gate else torch.ones_like(gate)
    torch.testing.assert_close(d_attended, d_out * sig)
    torch.testing.assert_close(delta, (d_out * sig * attended).sum(-1).permute(0, 2, 1))
    if with_gate:
        torch.testing.assert_close(d_gate, d_out * attended * sig * (1 - sig))
    else:
        assert d_gate is None


def test_tile_configs_for_wide_float32_heads_use_8_warps():
    assert module.default_config(96, torch.float32) == (64, 64, 8)
    assert module.default_config(64, torch.float32) == (64, 64, 4)
    assert module.default_config(128, torch.bfloat16) == (64, 64, 4)
    configs = module._configs(("BLOCK_M", "BLOCK_N"))
    wide = module._keep_feasible_configs(configs, {"Q": torch.zeros(1, dtype=torch.float32)}, HEAD_DIM=96)
    assert wide and all(c.num_warps == 8 for c in wide)
    assert module._keep_feasible_configs(configs, {"Q": torch.zeros(1, dtype=torch.bfloat16)}, HEAD_DIM=96) == configs


@pytest.mark.long
def test_gpu_check_script_dry_run(tmp_path):
    # The GPU check's CPU-checkable parts: the kernel benchmark and the training
    # steps on tiny shapes under Triton's interpreter, and the summary table.
    import os
    import subprocess
    import sys

    if DEVICE != "cpu":
        pytest.skip("on a GPU machine benchmarks/gpu_check.sh runs in full")
    # The pretraining step on torch: under JAX and TensorFlow the same step (mixed bfloat16, compiled)
    # runs in every pass (test_workflows.py's bfloat16 runs), without starting two more processes here.
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
               GPU_CHECK_BACKENDS="torch")
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", str(tmp_path)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    failed_parts = [line for line in done.stdout.splitlines() if line.startswith("!!!")]
    assert done.returncode == 0, "\n".join(failed_parts) + "\n" + done.stdout[-3000:] + done.stderr[-3000:]
    summary = (tmp_path / "summary.txt").read_text()
    assert summary.count("ViT-B fwd+bwd") == 4 and summary.count("BAT pretraining step") == 1  # torch
    assert "limit check: log-mel" in (tmp_path / "kernels.log").read_text()
    kernels = json.loads((tmp_path / "kernels.json").read_text())
    unbiased, biased = kernels["attention"]
    assert set(unbiased["results"]) == {"fused_triton", "fused_one_pass", "sdpa_then_gate", "keras_ops_path"}
    assert set(biased["results"]) == {"fused_triton", "fused_one_pass", "sdpa_then_gate"} and biased["bias"]
    for row in (unbiased, biased):  # float32 in the interpreter
        assert max(result["max_relative_error"] for result in row["results"].values()) <= 1e-4
    log_mel = kernels["log_mel"][0]["results"]
    assert log_mel["fused_dft_tf32x3"]["max_abs_difference"] <= 1e-4
    assert log_mel["fused_dft_bf16x3"]["max_abs_difference"] <= 2e-3
