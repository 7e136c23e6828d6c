"""Triton kernels vs PyTorch on a CUDA GPU: fused gated attention against
scaled_dot_product_attention + a separate gate and against keras_bat's keras.ops
path, at BAT's shapes (bfloat16; "padded": half the sequences cut to about half
their length); fused log-mel against torch.stft + matmul and the keras.ops
frontend. Prints a table (ms, TFLOP/s, peak memory, error against a float32
reference, speed-up) and the limit checks (64-bit offsets, more than 65535
sequences x heads, a log-mel batch past 2**31 values), and writes JSON.

    python benchmarks/kernels.py                 # on a CUDA GPU
    python benchmarks/kernels.py --smoke         # tiny shapes in Triton's CPU interpreter (checks the script)
"""

import argparse
import json
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU interpreter")
    parser.add_argument("--output", default="benchmarks/results/kernels.json")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=50)
    return parser.parse_args(argv)


# name: batch, tokens (queries = keys), heads, head_dim, padded (every second sequence about half as long),
# additive bias per sequence (BEATs' gated relative positions, float32, with its gradient)
ATTENTION_SHAPES = {
    "vit_b_10s_513": (64, 513, 12, 64, False, False),
    "pretrain_kept_103": (384, 103, 12, 64, False, False),
    "vit_b_10s_513_padded": (64, 513, 12, 64, True, False),
    "vit_b_20s_1025_padded": (32, 1025, 12, 64, True, False),
    "beats_10s_496_bias": (32, 496, 12, 64, False, True),
}
SMOKE_SHAPES = {"smoke": (2, 40, 2, 32, True, False), "smoke_bias": (2, 40, 2, 32, True, True)}


def padded_lengths(batch, tokens, device):
    """Every second sequence keeps the class token and half of its patches."""
    import torch

    lengths = torch.full((batch,), tokens, device=device)
    lengths[1::2] = 1 + (tokens - 1) // 2
    return lengths


def relative_error(actual, expected):
    actual, expected = actual.detach().float(), expected.detach().float()
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


def time_ms(function, warmup, repeats, device):
    import time

    import torch

    for _ in range(warmup):
        function()
    if device == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(repeats):
            start.record()
            function()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    else:
        times = []
        for _ in range(repeats):
            begin = time.perf_counter()
            function()
            times.append(1000 * (time.perf_counter() - begin))
    times.sort()
    return times[len(times) // 2]


def attention_rows(shapes, dtype, device, warmup, repeats):
    import torch
    import torch.nn.functional as F

    from keras_bat.ops import gated_attention as keras_path
    from keras_bat_kernels.gated_attention import gated_attention as fused

    rows = []
    for name, (batch, tokens, heads, head_dim, masked, with_bias) in shapes.items():
        generator = torch.Generator(device=device).manual_seed(0)

        def tensor():
            return torch.randn(batch, tokens, heads, head_dim, device=device, dtype=dtype,
                               generator=generator).requires_grad_()

        q, k, v, gate = tensor(), tensor(), tensor(), tensor()
        lengths = padded_lengths(batch, tokens, device) if masked else None
        key_mask = (torch.arange(tokens, device=device)[None, :] < lengths[:, None]) if masked else None
        upstream = torch.randn_like(q)
        bias = (torch.randn(batch, heads, tokens, tokens, device=device, generator=generator).requires_grad_()
                if with_bias else None)
        inputs = (q, k, v, gate) + ((bias,) if with_bias else ())

        def sdpa_then_gate():
            mask = None if key_mask is None else key_mask[:, None, None, :]
            if bias is not None:  # additive: the bias, -inf at padded keys
                mask = bias.to(dtype) if mask is None else bias.to(dtype).masked_fill(~mask, float("-inf"))
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                 attn_mask=mask).transpose(1, 2)
            return out * torch.sigmoid(gate)

        implementations = {
            "fused_triton": lambda: fused(q, k, v, gate, lengths, bias=bias),
            "fused_one_pass": lambda: fused(q, k, v, gate, lengths, bias=bias, dq_by_atomics=True),
            "sdpa_then_gate": sdpa_then_gate,
        }
        if bias is None:  # keras_bat.ops takes a bias only through the encoders' blocks
            implementations["keras_ops_path"] = lambda: keras_path(q, k, v, gate, key_mask, use_kernels=False)
        flops = 4.0 * batch * heads * tokens * tokens * head_dim  # two matmuls, forward
        expected = reference_with_grads(inputs, lengths, upstream)
        results = {}
        for label, forward in implementations.items():
            def forward_backward():
                return torch.autograd.grad(forward(), inputs, upstream)

            with torch.no_grad():
                forward_ms = time_ms(forward, warmup, repeats, device)
            both_ms = time_ms(forward_backward, warmup, repeats, device)
            memory = peak_memory_mib(forward_backward, device)
            actual = (forward().detach(), *forward_backward())
            results[label] = {"forward_ms": forward_ms, "forward_backward_ms": both_ms,
                              "forward_tflops": flops / forward_ms / 1e9,
                              "forward_backward_tflops": 3.5 * flops / both_ms / 1e9,
                              "peak_mib": memory,
                              "max_relative_error": max(relative_error(a, e) for a, e in zip(actual, expected))}
        sdpa_ms = results["sdpa_then_gate"]["forward_backward_ms"]
        rows.append({"shape": name, "batch": batch, "tokens": tokens, "heads": heads, "head_dim": head_dim,
                     "masked": masked, "bias": with_bias, "results": results,
                     "speedup_vs_sdpa_forward_backward": sdpa_ms / results["fused_triton"]["forward_backward_ms"],
                     "one_pass_speedup_vs_sdpa_forward_backward":
                         sdpa_ms / results["fused_one_pass"]["forward_backward_ms"]})
    return rows


def reference_with_grads(inputs, lengths, upstream):
    """Float32 output and gradients of the plain-PyTorch reference for q, k,
    v, gate and an optional bias (the error column's ground truth)."""
    import torch

    from keras_bat_kernels.gated_attention import gated_attention_reference

    inputs = [t.detach().float().requires_grad_() for t in inputs]
    q, k, v, gate, *bias = inputs
    out = gated_attention_reference(q, k, v, gate, lengths, bias=bias[0] if bias else None)
    return (out.detach(), *torch.autograd.grad(out, inputs, upstream.float()))


def peak_memory_mib(function, device):
    """Peak memory above what was allocated before `function()` (CUDA only)."""
    import torch

    if device != "cuda":
        return None
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    function()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def limit_rows(device, smoke):
    """The sizes that 32-bit offsets or a 65535-program grid axis would break:
    the fused kernels run there and the last sequences or clips are compared
    with the reference computed on them alone."""
    import torch

    from keras_bat.layers.frontend import htk_mel_filter_bank
    from keras_bat_kernels.gated_attention import gated_attention as fused
    from keras_bat_kernels.log_mel import log_mel_reference, log_mel_spectrogram, log_mel_spectrogram_via_stft

    dtype = torch.float32 if smoke else torch.bfloat16
    rows = []
    # A fused (B, N, 3, H, D) projection: sequence 1820 of 513 tokens starts past 2**31 elements.
    batch, tokens, heads, head_dim = (2, 40, 2, 32) if smoke else (1900, 513, 12, 64)
    generator = torch.Generator(device=device).manual_seed(0)
    qkv = torch.randn(batch, tokens, 3, heads, head_dim, device=device, dtype=dtype, generator=generator)
    gate = torch.randn(batch, tokens, heads, head_dim, device=device, dtype=dtype, generator=generator)
    qkv.requires_grad_()
    lengths = padded_lengths(batch, tokens, device)
    out = fused(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], gate, lengths)
    (grad,) = torch.autograd.grad(out.float().sum(), qkv)
    tail = slice(batch - 2, batch)
    part = qkv[tail].detach().float().requires_grad_()
    expected = fused_reference(part, gate[tail], lengths[tail])
    (expected_grad,) = torch.autograd.grad(expected.sum(), part)
    rows.append({"check": f"attention fwd+bwd, fused qkv {batch} x {tokens} tokens x {heads} heads (offsets "
                          f"up to {qkv.numel() * 1.0:.2e})",
                 "max_relative_error": max(relative_error(out[tail], expected),
                                           relative_error(grad[tail], expected_grad))})
    del qkv, gate, out, grad
    # More than 65535 sequences x heads.
    batch, tokens, heads = (3, 20, 2) if smoke else (5500, 32, 12)
    q, k, v = (torch.randn(batch, tokens, heads, 64, device=device, dtype=dtype, generator=generator)
               for _ in range(3))
    with torch.no_grad():
        out = fused(q, k, v)
        expected = fused_reference(torch.stack((q[-2:], k[-2:], v[-2:]), 2).float(), None, None)
    rows.append({"check": f"attention fwd, {batch} x {heads} = {batch * heads} sequences x heads",
                 "max_relative_error": relative_error(out[-2:], expected)})
    del q, k, v, out
    # A log-mel batch whose interleaved STFT holds more than 2**31 values, on both routes.
    clips, seconds = (2, 0.5) if smoke else (2100, 10.0)
    waveforms = torch.randn(clips, int(seconds * 16000), device=device, generator=generator)
    bank = torch.as_tensor(htk_mel_filter_bank(513, 128, 16000, 0.0, None), device=device)
    with torch.no_grad():
        window = torch.hann_window(1024, periodic=True, device=device)
        stft = torch.stft(waveforms[-2:], 1024, 160, window=window, center=True, pad_mode="reflect",
                          return_complex=True).transpose(1, 2)
        expected = log_mel_reference(stft.real, stft.imag, bank)
        for label, route in (("DFT as matrix products", log_mel_spectrogram),
                             ("after torch.stft", log_mel_spectrogram_via_stft)):
            out = route(waveforms, bank)[-2:]
            rows.append({"check": f"log-mel {label}, {clips} x {seconds:g} s clips "
                                  f"({clips * stft.shape[1] * 513 * 2:.2e} STFT values)",
                         "max_relative_error": relative_error(out, expected)})
            del out
    return rows


def fused_reference(qkv, gate, lengths):
    from keras_bat_kernels.gated_attention import gated_attention_reference

    return gated_attention_reference(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], gate, lengths)


def log_mel_rows(clips, seconds, device, warmup, repeats):
    import torch

    from keras_bat.layers import LogMelSpectrogram
    from keras_bat.layers.frontend import htk_mel_filter_bank
    from keras_bat_kernels.log_mel import log_mel_reference, log_mel_spectrogram, log_mel_spectrogram_via_stft

    waveforms = torch.randn(clips, int(seconds * 16000), device=device)
    bank = torch.as_tensor(htk_mel_filter_bank(513, 128, 16000, 0.0, None), device=device)
    window = torch.hann_window(1024, periodic=True, device=device)

    def stft_then_matmul():
        stft = torch.view_as_real(torch.stft(waveforms, 1024, 160, window=window, center=True,
                                             pad_mode="reflect", return_complex=True).transpose(1, 2))
        return log_mel_reference(stft[..., 0], stft[..., 1], bank)

    keras_frontend = LogMelSpectrogram(use_kernels=False)
    implementations = {"fused_dft_tf32x3": lambda: log_mel_spectrogram(waveforms, bank),
                       "fused_dft_bf16x3": lambda: log_mel_spectrogram(waveforms, bank, precision="bf16x3"),
                       "fused_after_stft": lambda: log_mel_spectrogram_via_stft(waveforms, bank),
                       "stft_then_matmul": stft_then_matmul,
                       "keras_ops_path": lambda: keras_frontend(waveforms)}
    with torch.no_grad():
        reference = stft_then_matmul()
        results = {label: {"ms": time_ms(f, warmup, repeats, device),
                           "max_abs_difference": float((f() - reference).abs().max())}
                   for label, f in implementations.items()}
    baseline = results["stft_then_matmul"]["ms"]
    for result in results.values():
        result["speedup_vs_stft_then_matmul"] = baseline / result["ms"]
    return [{"clips": clips, "seconds": seconds, "results": results}]


def main(argv=None):
    args = parse_args(argv)
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"
    os.environ["KERAS_BACKEND"] = "torch"
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.smoke:
        sys.exit("benchmarks/kernels.py needs a CUDA GPU (use --smoke to check the script on the CPU).")
    dtype = torch.float32 if args.smoke else torch.bfloat16
    warmup, repeats = (0, 1) if args.smoke else (args.warmup, args.repeats)  # smoke: each path once
    attention = attention_rows(SMOKE_SHAPES if args.smoke else ATTENTION_SHAPES, dtype, device, warmup, repeats)
    log_mel = log_mel_rows(2 if args.smoke else 32, 0.5 if args.smoke else 10.0, device, warmup, repeats)
    limits = limit_rows(device, args.smoke)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu (Triton interpreter)"
    print(f"device: {name}, attention dtype {dtype}")
    print(f"{'attention shape':24s} {'implementation':16s} {'fwd ms':>8s} {'fwd+bwd ms':>11s} {'fwd+bwd TFLOP/s':>16s} "
          f"{'peak MiB':>9s} {'max rel err':>11s}")
    for row in attention:
        for label, r in row["results"].items():
            memory = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
            print(f"{row['shape']:24s} {label:16s} {r['forward_ms']:8.3f} {r['forward_backward_ms']:11.3f} "
                  f"{r['forward_backward_tflops']:16.1f} {memory:>9s} {r['max_relative_error']:11.1e}")
        print(f"{'':24s} fused vs SDPA + gate (fwd+bwd): {row['speedup_vs_sdpa_forward_backward']:.2f}x, "
              f"one-pass backward: {row['one_pass_speedup_vs_sdpa_forward_backward']:.2f}x")
    for row in limits:
        print(f"limit check: {row['check']}: max relative error {row['max_relative_error']:.1e}")
    for row in log_mel:
        print(f"log-mel, {row['clips']} x {row['seconds']} s clips: ms, vs torch.stft + matmul, "
              "max abs difference from it")
        for label, r in row["results"].items():
            print(f"  {label:18s} {r['ms']:8.3f} ms {r['speedup_vs_stft_then_matmul']:6.2f}x "
                  f"{r['max_abs_difference']:9.1e}")
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"device": name, "dtype": str(dtype), "attention": attention, "log_mel": log_mel,
                   "limits": limits}, f, indent=2)
    return {"attention": attention, "log_mel": log_mel, "limits": limits}


if __name__ == "__main__":
    main()
