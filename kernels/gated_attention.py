"""Fused gated masked attention (Triton), flash-attention style.

    out = softmax(q k^T * scale + mask) v * sigmoid(gate)

per head, with the sigmoid gate fused into the forward pass. Keys are masked by
per-sequence valid lengths (`key_lengths[b]`: keys at or after it are padding)
and a `key_offset` (the first `key_offset` tokens are queries only, as BAT's
visual query tokens are). No `(queries, keys)` matrix is ever stored: the
forward pass keeps a running max and sum per query row (and saves the
log-sum-exp), the backward pass recomputes the probabilities block by block.
Inputs are float32, bfloat16 or float16, with float32 accumulation.

Layout: `(batch, tokens, heads, head_dim)` with any strides (BAT slices q, k and
v out of one fused projection without copying them).
"""

import math
import os

import torch
import triton
import triton.language as tl

MIN_HEAD_DIM, MAX_HEAD_DIM = 16, 128
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    if UPCAST:  # see _upcast_dots
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _load_tile(X, b, h, s_b, s_n, s_h, s_d, tokens, token_ok, dims, dim_ok):
    """A (tokens, head_dim) tile of head `h` of sequence `b`; zeros outside."""
    return tl.load(X + b * s_b + h * s_h + tokens[:, None] * s_n + dims[None, :] * s_d,
                   mask=token_ok[:, None] & dim_ok[None, :], other=0.0)


@triton.jit
def _key_end(LENGTHS, b, num_keys, HAS_LENGTHS: tl.constexpr):
    """One past the last valid key of sequence `b`."""
    key_end = num_keys
    if HAS_LENGTHS:
        key_end = tl.minimum(tl.load(LENGTHS + b), num_keys)
    return key_end


@triton.jit
def _probabilities_and_score_grads(q, k, v, d_attended, lse, delta, col_ok, scale,
                                   PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """Recomputed probabilities P and dS = P * (dA v^T - delta) of one tile."""
    scores = _dot(q, tl.trans(k), PRECISION, UPCAST) * scale
    p = tl.where(col_ok[None, :], tl.exp(scores - lse[:, None]), 0.0)  # M, N
    dp = _dot(d_attended, tl.trans(v), PRECISION, UPCAST)
    return p, p * (dp - delta[:, None])


@triton.jit
def _attention_forward(Q, K, V, G, O, A, LSE, LENGTHS,
                       s_qb, s_qn, s_qh, s_qd, s_kb, s_kn, s_kh, s_kd, s_vb, s_vn, s_vh, s_vd,
                       s_gb, s_gn, s_gh, s_gd, s_ob, s_on, s_oh, s_od,
                       num_heads, num_queries, num_keys, key_offset, scale,
                       HAS_GATE: tl.constexpr, HAS_LENGTHS: tl.constexpr, HEAD_DIM: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                       PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    batch_head = tl.program_id(1)
    b = batch_head // num_heads
    h = batch_head % num_heads
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < num_queries
    dim_ok = dims < HEAD_DIM
    q = _load_tile(Q, b, h, s_qb, s_qn, s_qh, s_qd, rows, row_ok, dims, dim_ok)
    key_end = _key_end(LENGTHS, b, num_keys, HAS_LENGTHS)

    running_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    running_sum = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start in range(key_offset, key_end, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < key_end
        k = _load_tile(K, b, h, s_kb, s_kn, s_kh, s_kd, cols, col_ok, dims, dim_ok)
        scores = _dot(q, tl.trans(k), PRECISION, UPCAST) * scale  # M, N (float32)
        scores = tl.where(col_ok[None, :], scores, float("-inf"))
        new_max = tl.maximum(running_max, tl.max(scores, 1))
        p = tl.exp(scores - new_max[:, None])
        correction = tl.exp(running_max - new_max)
        running_sum = running_sum * correction + tl.sum(p, 1)
        v = _load_tile(V, b, h, s_vb, s_vn, s_vh, s_vd, cols, col_ok, dims, dim_ok)
        acc = acc * correction[:, None] + _dot(p.to(v.dtype), v, PRECISION, UPCAST)
        running_max = new_max

    has_keys = running_sum > 0
    attended = acc / tl.where(has_keys, running_sum, 1.0)[:, None]  # rows without keys give 0
    lse = tl.where(has_keys, running_max + tl.log(tl.where(has_keys, running_sum, 1.0)), float("inf"))
    tl.store(LSE + batch_head * num_queries + rows, lse, mask=row_ok)
    out_offsets = b * s_ob + h * s_oh + rows[:, None] * s_on + dims[None, :] * s_od
    out_mask = row_ok[:, None] & dim_ok[None, :]
    if HAS_GATE:
        gate = _load_tile(G, b, h, s_gb, s_gn, s_gh, s_gd, rows, row_ok, dims, dim_ok).to(tl.float32)
        tl.store(A + out_offsets, attended.to(A.dtype.element_ty), mask=out_mask)
        attended = attended * tl.sigmoid(gate)
    tl.store(O + out_offsets, attended.to(O.dtype.element_ty), mask=out_mask)


@triton.jit
def _attention_backward_keys(Q, K, V, DA, LSE, DELTA, DK, DV, LENGTHS,
                             s_qb, s_qn, s_qh, s_qd, s_kb, s_kn, s_kh, s_kd, s_vb, s_vn, s_vh, s_vd,
                             s_ob, s_on, s_oh, s_od, s_gb, s_gn, s_gh, s_gd,
                             num_heads, num_queries, num_keys, key_offset, scale,
                             HAS_LENGTHS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                             BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
                             UPCAST: tl.constexpr):
    """dK and dV for one block of keys, looping over all query blocks."""
    batch_head = tl.program_id(1)
    b = batch_head // num_heads
    h = batch_head % num_heads
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    dim_ok = dims < HEAD_DIM
    col_ok = (cols >= key_offset) & (cols < _key_end(LENGTHS, b, num_keys, HAS_LENGTHS))
    k = _load_tile(K, b, h, s_kb, s_kn, s_kh, s_kd, cols, col_ok, dims, dim_ok)
    v = _load_tile(V, b, h, s_vb, s_vn, s_vh, s_vd, cols, col_ok, dims, dim_ok)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for start in range(0, num_queries, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        row_ok = rows < num_queries
        q = _load_tile(Q, b, h, s_qb, s_qn, s_qh, s_qd, rows, row_ok, dims, dim_ok)
        d_attended = _load_tile(DA, b, h, s_ob, s_on, s_oh, s_od, rows, row_ok, dims, dim_ok)
        lse = tl.load(LSE + batch_head * num_queries + rows, mask=row_ok, other=float("inf"))
        delta = tl.load(DELTA + batch_head * num_queries + rows, mask=row_ok, other=0.0)
        p, ds = _probabilities_and_score_grads(q, k, v, d_attended, lse, delta, col_ok, scale, PRECISION, UPCAST)
        dv += _dot(tl.trans(p.to(d_attended.dtype)), d_attended, PRECISION, UPCAST)
        dk += _dot(tl.trans(ds.to(q.dtype)), q, PRECISION, UPCAST)
    out_offsets = b * s_gb + h * s_gh + cols[:, None] * s_gn + dims[None, :] * s_gd  # dK, dV layout
    out_mask = (cols < num_keys)[:, None] & dim_ok[None, :]
    tl.store(DK + out_offsets, (dk * scale).to(DK.dtype.element_ty), mask=out_mask)
    tl.store(DV + out_offsets, dv.to(DV.dtype.element_ty), mask=out_mask)


@triton.jit
def _attention_backward_queries(Q, K, V, DA, LSE, DELTA, DQ, LENGTHS,
                                s_qb, s_qn, s_qh, s_qd, s_kb, s_kn, s_kh, s_kd, s_vb, s_vn, s_vh, s_vd,
                                s_ob, s_on, s_oh, s_od,
                                num_heads, num_queries, num_keys, key_offset, scale,
                                HAS_LENGTHS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                                BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
                                UPCAST: tl.constexpr):
    """dQ for one block of queries, looping over the valid key blocks."""
    batch_head = tl.program_id(1)
    b = batch_head // num_heads
    h = batch_head % num_heads
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < num_queries
    dim_ok = dims < HEAD_DIM
    q = _load_tile(Q, b, h, s_qb, s_qn, s_qh, s_qd, rows, row_ok, dims, dim_ok)
    d_attended = _load_tile(DA, b, h, s_ob, s_on, s_oh, s_od, rows, row_ok, dims, dim_ok)
    lse = tl.load(LSE + batch_head * num_queries + rows, mask=row_ok, other=float("inf"))
    delta = tl.load(DELTA + batch_head * num_queries + rows, mask=row_ok, other=0.0)
    key_end = _key_end(LENGTHS, b, num_keys, HAS_LENGTHS)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start in range(key_offset, key_end, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < key_end
        k = _load_tile(K, b, h, s_kb, s_kn, s_kh, s_kd, cols, col_ok, dims, dim_ok)
        v = _load_tile(V, b, h, s_vb, s_vn, s_vh, s_vd, cols, col_ok, dims, dim_ok)
        _, ds = _probabilities_and_score_grads(q, k, v, d_attended, lse, delta, col_ok, scale, PRECISION, UPCAST)
        dq += _dot(ds.to(k.dtype), k, PRECISION, UPCAST)
    tl.store(DQ + b * s_ob + h * s_oh + rows[:, None] * s_on + dims[None, :] * s_od,  # dQ is laid out like dA
             (dq * scale).to(DQ.dtype.element_ty), mask=row_ok[:, None] & dim_ok[None, :])


def _upcast_dots(dtype):
    """Triton's CPU interpreter multiplies bfloat16 tiles wrongly in tl.dot
    (a 16 x 16 product off by 3e10 with triton 3.9), so there bfloat16 tiles
    are multiplied in float32; on GPUs they stay bfloat16."""
    return dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1"


def _precision(dtype):
    return "ieee" if dtype == torch.float32 or _upcast_dots(dtype) else "tf32"


def _strides(x):
    return tuple(x.stride())


def _blocks(device, block_m, block_n):
    if block_m and block_n:
        return block_m, block_n
    # Small blocks keep Triton's CPU interpreter fast; 64 x 64 suits head dims up to 128 on GPUs.
    default = 16 if device.type == "cpu" else 64
    return block_m or default, block_n or default


class _GatedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, gate, key_lengths, key_offset, block_m, block_n):
        batch, num_queries, num_heads, head_dim = q.shape
        num_keys = k.shape[1]
        block_m, block_n = _blocks(q.device, block_m, block_n)
        block_d = max(16, triton.next_power_of_2(head_dim))
        out = torch.empty((batch, num_queries, num_heads, head_dim), device=q.device, dtype=q.dtype)
        attended = torch.empty_like(out) if gate is not None else out
        lse = torch.empty((batch, num_heads, num_queries), device=q.device, dtype=torch.float32)
        scale = 1.0 / math.sqrt(head_dim)
        precision, upcast = _precision(q.dtype), _upcast_dots(q.dtype)
        grid = (triton.cdiv(num_queries, block_m), batch * num_heads)
        gate_arg = gate if gate is not None else out
        lengths_arg = key_lengths if key_lengths is not None else lse
        _attention_forward[grid](
            q, k, v, gate_arg, out, attended, lse, lengths_arg,
            *_strides(q), *_strides(k), *_strides(v), *_strides(gate_arg), *_strides(out),
            num_heads, num_queries, num_keys, key_offset, scale,
            HAS_GATE=gate is not None, HAS_LENGTHS=key_lengths is not None, HEAD_DIM=head_dim,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, PRECISION=precision, UPCAST=upcast)
        ctx.save_for_backward(q, k, v, gate, key_lengths, attended, lse)
        ctx.settings = (key_offset, block_m, block_n, block_d, scale, precision, upcast)
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, gate, key_lengths, attended, lse = ctx.saved_tensors
        key_offset, block_m, block_n, block_d, scale, precision, upcast = ctx.settings
        batch, num_queries, num_heads, head_dim = q.shape
        num_keys = k.shape[1]
        d_out = d_out.float()
        d_gate = None
        if gate is not None:  # out = attended * sigmoid(gate)
            sig = torch.sigmoid(gate.float())
            d_attended = d_out * sig
            d_gate = (d_out * attended.float() * sig * (1.0 - sig)).to(gate.dtype)
        else:
            d_attended = d_out
        delta = (d_attended * attended.float()).sum(-1).permute(0, 2, 1).contiguous()  # B, H, Nq
        d_attended = d_attended.to(q.dtype).contiguous()
        dq = torch.empty((batch, num_queries, num_heads, head_dim), device=q.device, dtype=q.dtype)
        dk = torch.empty((batch, num_keys, num_heads, head_dim), device=q.device, dtype=k.dtype)  # contiguous
        dv = torch.empty_like(dk)
        lengths_arg = key_lengths if key_lengths is not None else lse
        common = dict(HAS_LENGTHS=key_lengths is not None, HEAD_DIM=head_dim, BLOCK_M=block_m,
                      BLOCK_N=block_n, BLOCK_D=block_d, PRECISION=precision, UPCAST=upcast)
        sizes = (num_heads, num_queries, num_keys, key_offset, scale)
        _attention_backward_keys[(triton.cdiv(num_keys, block_n), batch * num_heads)](
            q, k, v, d_attended, lse, delta, dk, dv, lengths_arg,
            *_strides(q), *_strides(k), *_strides(v), *_strides(d_attended), *_strides(dk), *sizes, **common)
        _attention_backward_queries[(triton.cdiv(num_queries, block_m), batch * num_heads)](
            q, k, v, d_attended, lse, delta, dq, lengths_arg,
            *_strides(q), *_strides(k), *_strides(v), *_strides(d_attended), *sizes, **common)
        return dq, dk, dv, d_gate, None, None, None, None


def gated_attention(q, k, v, gate=None, key_lengths=None, key_offset=0, block_m=None, block_n=None):
    """Fused `softmax(q k^T / sqrt(d) + mask) v * sigmoid(gate)`, differentiable.

    Args:
        q: tensor `(batch, queries, heads, head_dim)`, float32 / bfloat16 /
            float16, head_dim 16 to 128.
        k, v: tensors `(batch, keys, heads, head_dim)`, same dtype.
        gate: optional gate logits shaped like `q`.
        key_lengths: optional int tensor `(batch,)`: keys at index >=
            `key_lengths[b]` are padding.
        key_offset: int, keys start at this index (earlier tokens are
            queries only). A query row without any valid key gives zeros.
        block_m, block_n: optional tile sizes (powers of two, >= 16).

    Returns:
        Tensor like `q`.
    """
    _check_inputs(q, k, v, gate, key_lengths, key_offset)
    if key_lengths is not None:
        key_lengths = key_lengths.to(device=q.device, dtype=torch.int32).contiguous()
    return _GatedAttention.apply(q, k, v, gate, key_lengths, int(key_offset), block_m, block_n)


def unsupported_reason(q):
    """Why the kernel cannot take queries like `q` (`None` when it can)."""
    if q.dtype not in DTYPES:
        return f"dtype {q.dtype} is not one of {DTYPES}"
    if not MIN_HEAD_DIM <= q.shape[-1] <= MAX_HEAD_DIM:
        return f"head_dim {q.shape[-1]} is outside {MIN_HEAD_DIM} to {MAX_HEAD_DIM}"
    return None


def _check_inputs(q, k, v, gate, key_lengths, key_offset):
    if q.dim() != 4 or k.shape != v.shape or k.dim() != 4:
        raise ValueError(f"Expected q (B, Nq, H, D) and k, v (B, Nk, H, D); received {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}.")
    if (q.shape[0], q.shape[2], q.shape[3]) != (k.shape[0], k.shape[2], k.shape[3]):
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree in batch, heads or head_dim.")
    if not MIN_HEAD_DIM <= q.shape[3] <= MAX_HEAD_DIM:
        raise ValueError(f"head_dim must be {MIN_HEAD_DIM} to {MAX_HEAD_DIM}; received {q.shape[3]}.")
    if q.dtype not in DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"q, k, v must share one of {DTYPES}; received {q.dtype}, {k.dtype}, {v.dtype}.")
    if gate is not None and (gate.shape != q.shape):
        raise ValueError(f"gate must be shaped like q {tuple(q.shape)}; received {tuple(gate.shape)}.")
    if key_lengths is not None and tuple(key_lengths.shape) != (q.shape[0],):
        raise ValueError(f"key_lengths must be (batch,) = ({q.shape[0]},); received {tuple(key_lengths.shape)}.")
    if not 0 <= key_offset <= k.shape[1]:
        raise ValueError(f"key_offset must be 0 to {k.shape[1]}; received {key_offset}.")


def gated_attention_reference(q, k, v, gate=None, key_lengths=None, key_offset=0):
    """The same computation in plain PyTorch (float32), for tests and benchmarks."""
    q, k, v = q.float(), k.float(), v.float()
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    positions = torch.arange(k.shape[1], device=q.device)
    valid = (positions >= key_offset)[None, :].expand(q.shape[0], -1)
    if key_lengths is not None:
        valid = valid & (positions[None, :] < key_lengths.to(q.device)[:, None])
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    weights = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)  # rows without keys -> 0
    out = torch.einsum("bhqk,bkhd->bqhd", weights, v)
    if gate is not None:
        out = out * torch.sigmoid(gate.float())
    return out
