"""Fused gated masked attention (Triton), flash-attention style.

    out = softmax(q k^T * scale + bias + mask) v * sigmoid(gate)

per head, with the sigmoid gate fused into the forward pass and an optional
additive bias `(batch or 1, heads, queries, keys)` (BEATs' relative positions;
its gradient is the score gradient the backward pass computes anyway). Keys are masked by
per-sequence valid lengths (`key_lengths[b]`: keys at or after it are padding)
and a `key_offset` (the first `key_offset` tokens are queries only, as BAT's
visual query tokens are). No `(queries, keys)` matrix is ever stored: the
forward pass keeps a running max and sum per query row (and saves the
log-sum-exp when a gradient will be asked for), the backward pass recomputes
the probabilities block by block. Inputs are float32, bfloat16 or float16,
with float32 accumulation.

Layout: `(batch, tokens, heads, head_dim)` with any strides (BAT slices q, k and
v out of one fused projection without copying them). Memory offsets are 64-bit
and `batch * heads` runs on the first launch-grid axis, so neither the tensor
size nor the number of sequences is capped below what the GPU holds.

Tiles: on a GPU each kernel is autotuned over a small config set, keyed on the
token count (rounded up to a power of two), the head dim and the dtype; fixed
tiles (`block_m`, `block_n`, or `KERAS_BAT_AUTOTUNE=0`) use `default_config`.
"""

import functools
import math
import os

import torch
import triton
import triton.language as tl

MIN_HEAD_DIM, MAX_HEAD_DIM = 16, 128
MIN_BLOCK, MAX_BLOCK = 16, 256  # tl.dot needs every tile side >= 16 on GPUs
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
AUTOTUNE_ENV = "KERAS_BAT_AUTOTUNE"


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    if UPCAST:  # see _upcast_dots
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _head_start(b, h, s_b, s_h):
    """64-bit element offset of head `h` of sequence `b` (past 2**31 in large batches)."""
    return b.to(tl.int64) * s_b + h.to(tl.int64) * s_h


@triton.jit
def _tile_offsets(b, h, s_b, s_n, s_h, s_d, tokens, dims):
    """Element offsets of a (tokens, head_dim) tile of head `h` of sequence `b`:
    a 64-bit head start plus 32-bit offsets within one sequence (the launcher
    checks that they fit)."""
    return _head_start(b, h, s_b, s_h) + (tokens[:, None] * s_n + dims[None, :] * s_d)


@triton.jit
def _load_tile(X, b, h, s_b, s_n, s_h, s_d, tokens, token_ok, dims, dim_ok):
    """A (tokens, head_dim) tile of head `h` of sequence `b`; zeros outside."""
    return tl.load(X + _tile_offsets(b, h, s_b, s_n, s_h, s_d, tokens, dims),
                   mask=token_ok[:, None] & dim_ok[None, :], other=0.0)


@triton.jit
def _row_offsets(batch_head, num_queries, rows):
    """64-bit offsets into a (batch * heads, queries) float32 row statistic."""
    return batch_head.to(tl.int64) * num_queries + rows


@triton.jit
def _query_block(num_heads, num_queries, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's (sequence x head, sequence, head) from grid axis 0 and its
    block of query rows from axis 1, with the rows' and head dims' bounds."""
    batch_head = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    return batch_head, batch_head // num_heads, batch_head % num_heads, rows, rows < num_queries, dims, dims < HEAD_DIM


@triton.jit
def _key_end(LENGTHS, b, num_keys, HAS_LENGTHS: tl.constexpr):
    """One past the last valid key of sequence `b`."""
    key_end = num_keys
    if HAS_LENGTHS:
        key_end = tl.minimum(tl.load(LENGTHS + b), num_keys)
    return key_end


@triton.jit
def _bias_offsets(b, h, s_bb, s_bh, s_bq, s_bk, rows, cols, key_offset):
    """64-bit offsets of a (queries, keys) tile of a bias whose columns count the keys
    after `key_offset` (a bias broadcast over the batch has `s_bb = 0`)."""
    return (_head_start(b, h, s_bb, s_bh) + rows[:, None].to(tl.int64) * s_bq
            + (cols - key_offset)[None, :].to(tl.int64) * s_bk)


@triton.jit
def _bias_tile(BIAS, b, h, s_bb, s_bh, s_bq, s_bk, rows, row_ok, cols, col_ok, key_offset):
    """The additive bias of a (queries, keys) tile in float32; zeros outside."""
    return tl.load(BIAS + _bias_offsets(b, h, s_bb, s_bh, s_bq, s_bk, rows, cols, key_offset),
                   mask=row_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)


@triton.jit
def _probabilities_and_score_grads(q, k, v, d_attended, lse, delta, col_ok, scale, bias,
                                   PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """Recomputed probabilities P and dS = P * (dA v^T - delta) of one tile (`bias`: its
    additive bias tile, or 0)."""
    scores = _dot(q, tl.trans(k), PRECISION, UPCAST) * scale + bias
    p = tl.where(col_ok[None, :], tl.exp(scores - lse[:, None]), 0.0)  # M, N
    dp = _dot(d_attended, tl.trans(v), PRECISION, UPCAST)
    return p, p * (dp - delta[:, None])


@triton.jit
def _attention_forward(Q, K, V, G, O, A, LSE, LENGTHS, BIAS,  # noqa: E741 (the kernel's tensor names)
                       s_qb, s_qn, s_qh, s_qd, s_kb, s_kn, s_kh, s_kd, s_vb, s_vn, s_vh, s_vd,
                       s_gb, s_gn, s_gh, s_gd, s_ob, s_on, s_oh, s_od, s_bb, s_bh, s_bq, s_bk,
                       num_heads, num_queries, num_keys, key_offset, scale, tokens_bucket,
                       HAS_GATE: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_BIAS: tl.constexpr,
                       FOR_BACKWARD: tl.constexpr,
                       HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_D: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """One block of queries. `A` (the attention before the gate) and `LSE` are
    written only when the backward pass will read them (`FOR_BACKWARD`)."""
    batch_head, b, h, rows, row_ok, dims, dim_ok = _query_block(num_heads, num_queries, HEAD_DIM, BLOCK_M, BLOCK_D)
    q = _load_tile(Q, b, h, s_qb, s_qn, s_qh, s_qd, rows, row_ok, dims, dim_ok)
    key_end = _key_end(LENGTHS, b, num_keys, HAS_LENGTHS)

    # Scores in base 2 (exp2 is the GPU's native exponential): log2(e) folded into the scale.
    scale_log2 = scale * 1.4426950408889634
    running_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    running_sum = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start in range(key_offset, key_end, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < key_end
        k = _load_tile(K, b, h, s_kb, s_kn, s_kh, s_kd, cols, col_ok, dims, dim_ok)
        scores = _dot(q, tl.trans(k), PRECISION, UPCAST) * scale_log2  # M, N (float32, base 2)
        if HAS_BIAS:
            scores += _bias_tile(BIAS, b, h, s_bb, s_bh, s_bq, s_bk, rows, row_ok, cols, col_ok,
                                 key_offset) * 1.4426950408889634
        scores = tl.where(col_ok[None, :], scores, float("-inf"))
        new_max = tl.maximum(running_max, tl.max(scores, 1))
        p = tl.exp2(scores - new_max[:, None])
        correction = tl.exp2(running_max - new_max)
        running_sum = running_sum * correction + tl.sum(p, 1)
        v = _load_tile(V, b, h, s_vb, s_vn, s_vh, s_vd, cols, col_ok, dims, dim_ok)
        acc = acc * correction[:, None] + _dot(p.to(v.dtype), v, PRECISION, UPCAST)
        running_max = new_max

    has_keys = running_sum > 0
    attended = acc / tl.where(has_keys, running_sum, 1.0)[:, None]  # rows without keys give 0
    out_offsets = _tile_offsets(b, h, s_ob, s_on, s_oh, s_od, rows, dims)
    out_mask = row_ok[:, None] & dim_ok[None, :]
    if FOR_BACKWARD:
        lse = tl.where(has_keys, (running_max + tl.log2(tl.where(has_keys, running_sum, 1.0))) * 0.6931471805599453,
                       float("inf"))  # natural log-sum-exp
        tl.store(LSE + _row_offsets(batch_head, num_queries, rows), lse, mask=row_ok)
    if HAS_GATE:
        gate = _load_tile(G, b, h, s_gb, s_gn, s_gh, s_gd, rows, row_ok, dims, dim_ok).to(tl.float32)
        if FOR_BACKWARD:
            tl.store(A + out_offsets, attended.to(A.dtype.element_ty), mask=out_mask)
        attended = attended * tl.sigmoid(gate)
    tl.store(O + out_offsets, attended.to(O.dtype.element_ty), mask=out_mask)


@triton.jit
def _gate_backward(DO, A, G, DA, DG, DELTA,
                   s_ob, s_on, s_oh, s_od, s_ab, s_an, s_ah, s_ad, s_gb, s_gn, s_gh, s_gd,
                   s_db, s_dn, s_dh, s_dd, num_heads, num_queries,
                   HAS_GATE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_D: tl.constexpr):
    """The backward pass's preprocessing in one read of each input: for
    out = A * sigmoid(G), dA = dO * sigmoid(G), dG = dO * A * sigmoid(G) (1 -
    sigmoid(G)) and the row statistic delta = sum(dA * A) over the head dim.
    dA and dG are written in the inputs' dtype (dG laid out like dA)."""
    batch_head, b, h, rows, row_ok, dims, dim_ok = _query_block(num_heads, num_queries, HEAD_DIM, BLOCK_M, BLOCK_D)
    d_out = _load_tile(DO, b, h, s_ob, s_on, s_oh, s_od, rows, row_ok, dims, dim_ok).to(tl.float32)
    attended = _load_tile(A, b, h, s_ab, s_an, s_ah, s_ad, rows, row_ok, dims, dim_ok).to(tl.float32)
    out_offsets = _tile_offsets(b, h, s_db, s_dn, s_dh, s_dd, rows, dims)
    out_mask = row_ok[:, None] & dim_ok[None, :]
    d_attended = d_out
    if HAS_GATE:
        sig = tl.sigmoid(_load_tile(G, b, h, s_gb, s_gn, s_gh, s_gd, rows, row_ok, dims, dim_ok).to(tl.float32))
        d_attended = d_out * sig
        tl.store(DG + out_offsets, (d_out * attended * sig * (1.0 - sig)).to(DG.dtype.element_ty), mask=out_mask)
    d_attended = d_attended.to(DA.dtype.element_ty)
    tl.store(DA + out_offsets, d_attended, mask=out_mask)
    # delta from the rounded dA, as the other backward kernels read it
    delta = tl.sum(d_attended.to(tl.float32) * attended, 1)
    tl.store(DELTA + _row_offsets(batch_head, num_queries, rows), delta, mask=row_ok)


@triton.jit
def _attention_backward_keys(Q, K, V, DA, LSE, DELTA, DK, DV, LENGTHS, BIAS, DBIAS, DQ,
                             s_qb, s_qn, s_qh, s_qd, s_kb, s_kn, s_kh, s_kd, s_vb, s_vn, s_vh, s_vd,
                             s_ob, s_on, s_oh, s_od, s_gb, s_gn, s_gh, s_gd, s_bb, s_bh, s_bq, s_bk,
                             s_db_b, s_db_h, s_db_q, s_db_k,
                             num_heads, num_queries, num_keys, key_offset, scale, tokens_bucket,
                             HAS_LENGTHS: tl.constexpr, HAS_BIAS: tl.constexpr, BIAS_GRAD: tl.constexpr,
                             DQ_ATOMIC: tl.constexpr,
                             HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                             BLOCK_D: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """dK and dV for one block of keys, looping over all query blocks; with `BIAS_GRAD`, the
    bias's gradient (the score gradient dS) for the tiles of these keys; with `DQ_ATOMIC`, these
    keys' share of dQ added into a float32 `DQ` laid out like dA (the backward pass in one
    kernel: no second pass recomputing the scores and dP per query block)."""
    batch_head = tl.program_id(0)
    b = batch_head // num_heads
    h = batch_head % num_heads
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
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
        lse = tl.load(LSE + _row_offsets(batch_head, num_queries, rows), mask=row_ok, other=float("inf"))
        delta = tl.load(DELTA + _row_offsets(batch_head, num_queries, rows), mask=row_ok, other=0.0)
        bias = 0.0
        if HAS_BIAS:
            bias = _bias_tile(BIAS, b, h, s_bb, s_bh, s_bq, s_bk, rows, row_ok, cols, col_ok, key_offset)
        p, ds = _probabilities_and_score_grads(q, k, v, d_attended, lse, delta, col_ok, scale, bias, PRECISION,
                                               UPCAST)
        if BIAS_GRAD:
            tl.store(DBIAS + _bias_offsets(b, h, s_db_b, s_db_h, s_db_q, s_db_k, rows, cols, key_offset), ds,
                     mask=row_ok[:, None] & col_ok[None, :])
        dv += _dot(tl.trans(p.to(d_attended.dtype)), d_attended, PRECISION, UPCAST)
        dk += _dot(tl.trans(ds.to(q.dtype)), q, PRECISION, UPCAST)
        if DQ_ATOMIC:
            tl.atomic_add(DQ + _tile_offsets(b, h, s_ob, s_on, s_oh, s_od, rows, dims),
                          _dot(ds.to(k.dtype), k, PRECISION, UPCAST) * scale, mask=row_ok[:, None] & dim_ok[None, :])
    out_offsets = _tile_offsets(b, h, s_gb, s_gn, s_gh, s_gd, cols, dims)  # dK, dV layout
    out_mask = (cols < num_keys)[:, None] & dim_ok[None, :]
    tl.store(DK + out_offsets, (dk * scale).to(DK.dtype.element_ty), mask=out_mask)
    tl.store(DV + out_offsets, dv.to(DV.dtype.element_ty), mask=out_mask)


@triton.jit
def _attention_backward_queries(Q, K, V, DA, LSE, DELTA, DQ, LENGTHS, BIAS,
                                s_qb, s_qn, s_qh, s_qd, s_kb, s_kn, s_kh, s_kd, s_vb, s_vn, s_vh, s_vd,
                                s_ob, s_on, s_oh, s_od, s_bb, s_bh, s_bq, s_bk,
                                num_heads, num_queries, num_keys, key_offset, scale, tokens_bucket,
                                HAS_LENGTHS: tl.constexpr, HAS_BIAS: tl.constexpr, HEAD_DIM: tl.constexpr,
                                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                                PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """dQ for one block of queries, looping over the valid key blocks."""
    batch_head, b, h, rows, row_ok, dims, dim_ok = _query_block(num_heads, num_queries, HEAD_DIM, BLOCK_M, BLOCK_D)
    q = _load_tile(Q, b, h, s_qb, s_qn, s_qh, s_qd, rows, row_ok, dims, dim_ok)
    d_attended = _load_tile(DA, b, h, s_ob, s_on, s_oh, s_od, rows, row_ok, dims, dim_ok)
    lse = tl.load(LSE + _row_offsets(batch_head, num_queries, rows), mask=row_ok, other=float("inf"))
    delta = tl.load(DELTA + _row_offsets(batch_head, num_queries, rows), mask=row_ok, other=0.0)
    key_end = _key_end(LENGTHS, b, num_keys, HAS_LENGTHS)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start in range(key_offset, key_end, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < key_end
        k = _load_tile(K, b, h, s_kb, s_kn, s_kh, s_kd, cols, col_ok, dims, dim_ok)
        v = _load_tile(V, b, h, s_vb, s_vn, s_vh, s_vd, cols, col_ok, dims, dim_ok)
        bias = 0.0
        if HAS_BIAS:
            bias = _bias_tile(BIAS, b, h, s_bb, s_bh, s_bq, s_bk, rows, row_ok, cols, col_ok, key_offset)
        _, ds = _probabilities_and_score_grads(q, k, v, d_attended, lse, delta, col_ok, scale, bias, PRECISION,
                                               UPCAST)
        dq += _dot(ds.to(k.dtype), k, PRECISION, UPCAST)
    tl.store(DQ + _tile_offsets(b, h, s_ob, s_on, s_oh, s_od, rows, dims),  # dQ is laid out like dA
             (dq * scale).to(DQ.dtype.element_ty), mask=row_ok[:, None] & dim_ok[None, :])


def default_config(head_dim, dtype, device_type="cuda"):
    """Fixed tiles: `(block_m, block_n, num_warps)`. 16 x 16 keeps Triton's CPU
    interpreter fast; on GPUs 64 x 64 tiles, with 8 warps for float32 head
    dims above 64 (4 warps spill their registers there)."""
    if device_type == "cpu":
        return 16, 16, 4
    return 64, 64, 8 if dtype == torch.float32 and head_dim > 64 else 4


def _keep_feasible_configs(configs, named_args, **kwargs):
    """Drops 4-warp configs for float32 head dims above 64 (register spills)."""
    head_dim = kwargs.get("HEAD_DIM", named_args.get("HEAD_DIM"))
    float32_wide = named_args["Q"].dtype == torch.float32 and head_dim > 64
    kept = [c for c in configs if not (float32_wide and c.num_warps < 8)]
    return kept or configs


def _configs(block_names):
    tiles = [(64, 64, 4, 2), (64, 64, 4, 3), (128, 64, 8, 3), (128, 64, 4, 3), (128, 128, 8, 3), (64, 32, 4, 3)]
    return [triton.Config(dict(zip(block_names, (m, n))), num_warps=w, num_stages=s) for m, n, w, s in tiles]


@functools.cache
def _autotuned(kernel, zeroed=()):
    """`kernel` autotuned; `zeroed` names the buffers it adds into, zeroed before each tuning run."""
    return triton.autotune(configs=_configs(("BLOCK_M", "BLOCK_N")), key=["tokens_bucket", "HEAD_DIM"],
                           prune_configs_by={"early_config_prune": _keep_feasible_configs},
                           reset_to_zero=list(zeroed) or None)(kernel)


def _upcast_dots(dtype):
    """Triton's CPU interpreter multiplies bfloat16 tiles wrongly in tl.dot
    (a 16 x 16 product off by 3e10 with triton 3.9), so there bfloat16 tiles
    are multiplied in float32; on GPUs they stay bfloat16."""
    return dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1"


def _precision(dtype):
    return "ieee" if dtype == torch.float32 or _upcast_dots(dtype) else "tf32"


def _strides(x):
    return tuple(x.stride())


def check_block(name, value):
    """Tile sides must be powers of two from MIN_BLOCK to MAX_BLOCK."""
    if value is None:
        return None
    if not (isinstance(value, int) and MIN_BLOCK <= value <= MAX_BLOCK and value & (value - 1) == 0):
        raise ValueError(f"{name} must be a power of two from {MIN_BLOCK} to {MAX_BLOCK}; received {value!r}.")
    return value


def _autotune_enabled(device):
    return device.type == "cuda" and os.environ.get(AUTOTUNE_ENV, "1") != "0"


class _Launcher:
    """Launches one kernel either autotuned (tiles chosen by Triton) or with the
    given fixed tiles, on a grid of (batch * heads, blocks of `tokens`)."""

    def __init__(self, device, head_dim, dtype, block_m, block_n):
        self.tuned = _autotune_enabled(device) and block_m is None and block_n is None
        default_m, default_n, self.num_warps = default_config(head_dim, dtype, device.type)
        self.block_m, self.block_n = block_m or default_m, block_n or default_n

    def __call__(self, kernel, batch_heads, tokens, tile, *args, zeroed=(), **kwargs):
        if self.tuned:
            grid = lambda meta: attention_grid(batch_heads, tokens, meta[tile])  # noqa: E731
            return _autotuned(kernel, zeroed)[grid](*args, **kwargs)
        blocks = {"BLOCK_M": self.block_m, "BLOCK_N": self.block_n}
        return kernel[attention_grid(batch_heads, tokens, blocks[tile])](
            *args, **kwargs, **blocks, num_warps=self.num_warps)


def attention_grid(batch_heads, tokens, block):
    """Launch grid: `batch * heads` on axis 0 (up to 2**31 - 1 programs), the
    token blocks on axis 1 (up to 65535, i.e. a million tokens at 16 per tile)."""
    return (batch_heads, triton.cdiv(tokens, block))


def _bias_strides(bias):
    """Strides of a bias `(batch or 1, heads, queries, keys)`: 0 over a broadcast batch."""
    if bias is None:
        return (0, 0, 0, 0)
    s_b, s_h, s_q, s_k = bias.stride()
    return (0 if bias.shape[0] == 1 else s_b, s_h, s_q, s_k)


def _forward(q, k, v, gate, key_lengths, key_offset, launcher, for_backward, bias=None):
    """Runs the forward kernel: `(out, attended, lse)`, the last two `None`
    unless `for_backward` (attended is `out` itself when there is no gate)."""
    batch, num_queries, num_heads, head_dim = q.shape
    num_keys = k.shape[1]
    out = torch.empty((batch, num_queries, num_heads, head_dim), device=q.device, dtype=q.dtype)
    attended = torch.empty_like(out) if gate is not None and for_backward else out
    lse = (torch.empty((batch, num_heads, num_queries), device=q.device, dtype=torch.float32)
           if for_backward else out)
    gate_arg = gate if gate is not None else out
    lengths_arg = key_lengths if key_lengths is not None else out
    bias_arg = bias if bias is not None else out
    launcher(_attention_forward, batch * num_heads, num_queries, "BLOCK_M",
             q, k, v, gate_arg, out, attended, lse, lengths_arg, bias_arg,
             *_strides(q), *_strides(k), *_strides(v), *_strides(gate_arg), *_strides(out), *_bias_strides(bias),
             num_heads, num_queries, num_keys, key_offset, 1.0 / math.sqrt(head_dim),
             triton.next_power_of_2(max(num_queries, num_keys)),
             HAS_GATE=gate is not None, HAS_LENGTHS=key_lengths is not None, HAS_BIAS=bias is not None,
             FOR_BACKWARD=for_backward,
             HEAD_DIM=head_dim, BLOCK_D=_block_d(head_dim), PRECISION=_precision(q.dtype),
             UPCAST=_upcast_dots(q.dtype))
    if not for_backward:
        return out, None, None
    return out, attended, lse


def _block_d(head_dim):
    return max(16, triton.next_power_of_2(head_dim))


def _gate_backward_pass(d_out, attended, gate, dtype):
    """`(d_attended, d_gate, delta)` from one kernel; d_attended is contiguous."""
    batch, num_queries, num_heads, head_dim = attended.shape
    d_attended = torch.empty((batch, num_queries, num_heads, head_dim), device=d_out.device, dtype=dtype)
    d_gate = torch.empty_like(d_attended) if gate is not None else d_attended
    delta = torch.empty((batch, num_heads, num_queries), device=d_out.device, dtype=torch.float32)
    gate_arg = gate if gate is not None else attended
    block_m = 16 if d_out.device.type == "cpu" else 64
    _gate_backward[attention_grid(batch * num_heads, num_queries, block_m)](
        d_out, attended, gate_arg, d_attended, d_gate, delta,
        *_strides(d_out), *_strides(attended), *_strides(gate_arg), *_strides(d_attended), num_heads, num_queries,
        HAS_GATE=gate is not None, HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_D=_block_d(head_dim))
    return d_attended, (d_gate if gate is not None else None), delta


class _GatedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, gate, key_lengths, key_offset, block_m, block_n, for_backward, bias, dq_by_atomics):
        launcher = _Launcher(q.device, q.shape[3], q.dtype, block_m, block_n)
        out, attended, lse = _forward(q, k, v, gate, key_lengths, key_offset, launcher, for_backward, bias)
        if for_backward:
            ctx.save_for_backward(q, k, v, gate, key_lengths, attended, lse, bias)
            ctx.settings = (key_offset, launcher, dq_by_atomics)
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, gate, key_lengths, attended, lse, bias = ctx.saved_tensors
        key_offset, launcher, dq_by_atomics = ctx.settings
        batch, num_queries, num_heads, head_dim = q.shape
        num_keys = k.shape[1]
        d_attended, d_gate, delta = _gate_backward_pass(d_out, attended, gate, q.dtype)
        # dQ laid out like dA; added into in float32 when the keys kernel computes it
        dq = torch.empty_like(d_attended) if not dq_by_atomics else torch.zeros_like(d_attended, dtype=torch.float32)
        dk = torch.empty((batch, num_keys, num_heads, head_dim), device=q.device, dtype=k.dtype)  # contiguous
        dv = torch.empty_like(dk)
        lengths_arg = key_lengths if key_lengths is not None else lse
        bias_arg = bias if bias is not None else lse
        # The bias's gradient, when it asks for one: per sequence (keys a sequence does not attend
        # to stay 0), summed below over a batch the bias is broadcast over.
        bias_grad = bias is not None and ctx.needs_input_grad[9]  # forward's inputs: bias is the tenth
        d_bias = (torch.zeros((batch, num_heads, num_queries, num_keys - key_offset), device=q.device,
                              dtype=torch.float32) if bias_grad else lse)
        d_bias_strides = tuple(d_bias.stride()) if bias_grad else (0, 0, 0, 0)
        common = dict(HAS_LENGTHS=key_lengths is not None, HAS_BIAS=bias is not None, HEAD_DIM=head_dim,
                      BLOCK_D=_block_d(head_dim), PRECISION=_precision(q.dtype), UPCAST=_upcast_dots(q.dtype))
        sizes = (num_heads, num_queries, num_keys, key_offset, 1.0 / math.sqrt(head_dim),
                 triton.next_power_of_2(max(num_queries, num_keys)))
        zeroed = ("DQ",) if dq_by_atomics else ()
        launcher(_attention_backward_keys, batch * num_heads, num_keys, "BLOCK_N",
                 q, k, v, d_attended, lse, delta, dk, dv, lengths_arg, bias_arg, d_bias, dq,
                 *_strides(q), *_strides(k), *_strides(v), *_strides(d_attended), *_strides(dk),
                 *_bias_strides(bias), *d_bias_strides, *sizes, BIAS_GRAD=bias_grad, DQ_ATOMIC=dq_by_atomics,
                 zeroed=zeroed, **common)
        if dq_by_atomics:
            dq = dq.to(q.dtype)
        else:
            launcher(_attention_backward_queries, batch * num_heads, num_queries, "BLOCK_M",
                     q, k, v, d_attended, lse, delta, dq, lengths_arg, bias_arg,
                     *_strides(q), *_strides(k), *_strides(v), *_strides(d_attended), *_bias_strides(bias), *sizes,
                     **common)
        if bias_grad:
            d_bias = (d_bias.sum(0, keepdim=True) if bias.shape[0] == 1 else d_bias).to(bias.dtype)
        return dq, dk, dv, d_gate, None, None, None, None, None, (d_bias if bias_grad else None), None


def gated_attention(q, k, v, gate=None, key_lengths=None, key_offset=0, block_m=None, block_n=None, bias=None,
                    dq_by_atomics=False):
    """Fused `softmax(q k^T / sqrt(d) + bias + mask) v * sigmoid(gate)`, differentiable.

    Args:
        q: tensor `(batch, queries, heads, head_dim)`, float32 / bfloat16 /
            float16, head_dim 16 to 128.
        k, v: tensors `(batch, keys, heads, head_dim)`, same dtype.
        gate: optional gate logits shaped like `q`.
        key_lengths: optional int tensor `(batch,)`: keys at index >=
            `key_lengths[b]` are padding.
        key_offset: int, keys start at this index (earlier tokens are
            queries only). A query row without any valid key gives zeros.
        block_m, block_n: optional fixed tile sizes (powers of two, 16 to
            256); by default tiles are autotuned on GPUs.
        bias: optional tensor `(batch or 1, heads, queries, keys - key_offset)`
            added to the scores (over the keys after `key_offset`), float32
            or q's dtype; differentiable.
        dq_by_atomics: the backward pass in one kernel over key blocks, each
            adding its share of dQ into a float32 buffer by atomic adds
            (FlashAttention-2's scheme: the scores and dP are computed once,
            not again per query block; dQ's summation order then varies from
            run to run), instead of a second kernel for dQ.

    Returns:
        Tensor like `q`.
    """
    _check_inputs(q, k, v, gate, key_lengths, key_offset, bias)
    check_block("block_m", block_m)
    check_block("block_n", block_n)
    if key_lengths is not None:
        key_lengths = key_lengths.to(device=q.device, dtype=torch.int32).contiguous()
    for_backward = torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                                   for t in (q, k, v, gate, bias))
    return _GatedAttention.apply(q, k, v, gate, key_lengths, int(key_offset), block_m, block_n, for_backward,
                                 bias, bool(dq_by_atomics))


def unsupported_reason(q):
    """Why the kernel cannot take queries like `q` (`None` when it can)."""
    if q.dtype not in DTYPES:
        return f"dtype {q.dtype} is not one of {DTYPES}"
    if not MIN_HEAD_DIM <= q.shape[-1] <= MAX_HEAD_DIM:
        return f"head_dim {q.shape[-1]} is outside {MIN_HEAD_DIM} to {MAX_HEAD_DIM}"
    return None


def _check_sequence_offsets(*tensors):
    """Offsets within one (tokens, heads, head_dim) sequence are 32-bit."""
    for x in tensors:
        if x is not None and sum((size - 1) * stride for size, stride in zip(x.shape[1:], x.stride()[1:])) >= 2**31:
            raise ValueError(f"One sequence of a tensor shaped {tuple(x.shape)} with strides {x.stride()} spans "
                             "2**31 elements or more; split its tokens into shorter sequences.")


def _check_inputs(q, k, v, gate, key_lengths, key_offset, bias=None):
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
    if bias is not None:
        expected = (q.shape[2], q.shape[1], k.shape[1] - key_offset)
        if bias.dim() != 4 or bias.shape[0] not in (1, q.shape[0]) or tuple(bias.shape[1:]) != expected:
            raise ValueError(f"bias must be (batch or 1, heads, queries, keys - key_offset) = ({q.shape[0]} or 1, "
                             f"{', '.join(map(str, expected))}); received {tuple(bias.shape)}.")
        if bias.dtype not in (torch.float32, q.dtype):
            raise TypeError(f"bias must be float32 or q's dtype {q.dtype}; received {bias.dtype}.")
    _check_sequence_offsets(q, k, v, gate)


def gated_attention_reference(q, k, v, gate=None, key_lengths=None, key_offset=0, bias=None):
    """The same computation in plain PyTorch (float32), for tests and benchmarks."""
    q, k, v = q.float(), k.float(), v.float()
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    if bias is not None:
        scores = scores + torch.nn.functional.pad(bias.float(), (key_offset, 0))
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
