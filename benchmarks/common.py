"""Shared benchmark harness: one process per backend, median step time, table and JSON."""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def time_steps(step, warmup, steps):
    """Median and minimum seconds of `step()` over `steps` calls after `warmup` calls."""
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "steps": steps}


BASELINE = "plain_torch"  # the baseline's row: benchmarks/plain_torch.py, the same work in plain PyTorch


def run_per_backend(script, backends, options, jit_modes=("auto",), timeout=None):
    """Runs `script --child` once per backend and jit mode (the baseline once);
    returns the parsed JSON lines.

    A run past `timeout` seconds is reported as timed out and skipped.
    """
    results = []
    for backend in backends:
        for jit in (jit_modes if backend != BASELINE else ("n/a",)):
            command = [sys.executable, script, "--child", "--jit", str(jit)]
            for key, value in options.items():
                command += [f"--{key.replace('_', '-')}", str(value)]
            env = dict(os.environ, KERAS_BACKEND="torch" if backend == BASELINE else backend,
                       KERAS_BAT_BENCHMARK_BASELINE=str(int(backend == BASELINE)), TF_CPP_MIN_LOG_LEVEL="2")
            try:
                done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                print(f"{backend} (jit {jit}): timed out after {timeout} s")
                continue
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode or not lines:
                print(f"{backend} (jit {jit}): failed\n{done.stderr[-2000:]}")
                continue
            results.append(json.loads(lines[-1]))
    return results


def report(title, results, output, config, gflop=None):
    """Prints the table (each row's time over the plain-PyTorch baseline's of
    the same run, and achieved GFLOP/s against the CPU's nominal peak when the
    work per step is given) and writes JSON."""
    peak = cpu_peak_gflops()
    print(title)
    if gflop:
        print(f"{gflop:.1f} GFLOP per step; nominal float32 peak of this CPU {peak['gflops']:.0f} GFLOP/s "
              f"({peak['basis']})")
    baseline = next((r for r in results if r["backend"] == BASELINE), None)
    if baseline and baseline.get("implementation"):
        print(f"baseline: {baseline['implementation']}")
    print(f"{'backend':12s} {'jit':>6s} {'median s':>9s} {'min s':>7s} {'ratio':>6s}"
          + (f" {'GFLOP/s':>8s} {'% peak':>7s}" if gflop else ""))
    for r in results:
        if baseline:
            r["ratio_to_baseline"] = r["median_s"] / baseline["median_s"]
        ratio = f"{r['ratio_to_baseline']:6.2f}" if baseline else f"{'n/a':>6s}"
        line = f"{r['backend']:12s} {str(r['jit']):>6s} {r['median_s']:9.3f} {r['min_s']:7.3f} {ratio}"
        if gflop:
            r["gflops"] = gflop / r["median_s"]
            line += f" {r['gflops']:8.1f} {100 * r['gflops'] / peak['gflops']:6.1f}%"
        print(line)
    os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
    with open(output, "w") as f:
        json.dump({"config": config, "gflop_per_step": gflop, "cpu_peak": peak, "results": results}, f, indent=2)


def cpu_peak_gflops():
    """Nominal float32 peak: cores x clock x FMA lanes x 2 FMA units x 2 flops
    (AVX-512: 16 lanes, AVX2: 8), from /proc/cpuinfo."""
    cores, mhz, lanes = os.cpu_count() or 1, 2000.0, 8
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        mhz = float(info.split("cpu MHz")[1].split(":")[1].split()[0])
        lanes = 16 if " avx512f" in info else 8
    except (OSError, IndexError, ValueError):
        pass
    gflops = cores * mhz / 1000 * lanes * 2 * 2
    return {"gflops": gflops, "basis": f"{cores} cores x {mhz / 1000:.2f} GHz x {lanes} lanes x 2 FMA units x 2"}


def encoder_gflop(sequences, tokens, dim, depth, mlp_ratio=4.0, gated=True):
    """Forward GFLOP of BAT blocks: projections (qkv, gate, out, MLP) and attention."""
    matmuls = (6 + (2 if gated else 0) + 2 + 4 * mlp_ratio) * dim * dim  # per token and block
    attention = 4 * tokens * dim  # scores and weighted sum
    return sequences * tokens * depth * (matmuls + attention) / 1e9


def parse_jit(value):
    return {"true": True, "false": False}.get(str(value).lower(), "auto")


def benchmark_parser(description, name, jit_default):
    """An argument parser with the options every benchmark shares."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch", BASELINE],
                        help=f"Keras backends, and {BASELINE} for the plain-PyTorch baseline")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--jit", nargs="+", default=jit_default, help="jit_compile values: auto true false")
    parser.add_argument("--output", default=f"benchmarks/results/{name}.json")
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed per backend and jit mode")
    parser.add_argument("--dtype-policy", default="float32",
                        help="Keras dtype policy, e.g. mixed_bfloat16 (the baseline then runs under "
                             "torch.autocast in bfloat16)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser


def run(script, args, option_names, run_child, title, gflop=None, run_baseline=None):
    """Runs the child measurement (keras-bat, or the baseline's step), or every
    backend and jit mode and the report."""
    if args.child:
        args.jit = args.jit[0]
        if os.environ.get("KERAS_BAT_BENCHMARK_BASELINE") == "1":
            import torch

            step, implementation = run_baseline(args)
            if args.dtype_policy == "mixed_bfloat16":
                plain_step = step

                def step():
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        return plain_step()

            print(json.dumps({"backend": BASELINE, "jit": "n/a", "implementation": implementation,
                              **time_steps(step, args.warmup, args.steps)}))
            return None
        import keras

        keras.config.set_dtype_policy(args.dtype_policy)
        return run_child(args)
    options = {name: getattr(args, name) for name in (*option_names, "dtype_policy")}
    results = run_per_backend(script, args.backends, options, args.jit, args.timeout)
    report(f"{title} ({args.dtype_policy})", results, args.output, options, gflop)
