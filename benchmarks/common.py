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


def run_per_backend(script, backends, options, jit_modes=("auto",), timeout=None):
    """Runs `script --child` once per backend and jit mode; returns the parsed JSON lines.

    A run past `timeout` seconds is reported as timed out and skipped.
    """
    results = []
    for backend in backends:
        for jit in jit_modes:
            command = [sys.executable, script, "--child", "--jit", str(jit)]
            for key, value in options.items():
                command += [f"--{key.replace('_', '-')}", str(value)]
            env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
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


def report(title, results, output, config):
    print(title)
    print(f"{'backend':12s} {'jit':>6s} {'median s':>9s} {'min s':>7s}")
    for r in results:
        print(f"{r['backend']:12s} {str(r['jit']):>6s} {r['median_s']:9.2f} {r['min_s']:7.2f}")
    os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
    with open(output, "w") as f:
        json.dump({"config": config, "results": results}, f, indent=2)


def parse_jit(value):
    return {"true": True, "false": False}.get(str(value).lower(), "auto")


def benchmark_parser(description, name, jit_default):
    """An argument parser with the options every benchmark shares."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--jit", nargs="+", default=jit_default, help="jit_compile values: auto true false")
    parser.add_argument("--output", default=f"benchmarks/results/{name}.json")
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed per backend and jit mode")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser


def run(script, args, option_names, run_child, title):
    """Runs the child measurement, or every backend and jit mode and the report."""
    if args.child:
        args.jit = args.jit[0]
        return run_child(args)
    options = {name: getattr(args, name) for name in option_names}
    results = run_per_backend(script, args.backends, options, args.jit, args.timeout)
    report(title, results, args.output, options)
