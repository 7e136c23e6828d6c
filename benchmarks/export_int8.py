"""int8 against float32: size, CPU latency and top-1 agreement of a task preset's exports.

One run exports a task preset (`keras-bat probe` / `finetune` write one to
`<run>/preset`) as LiteRT float32, LiteRT int8 (`--quantize int8`) and ONNX,
quantizes it with Keras' own `model.quantize("int8")`, and runs every form on
each recording of a folder, one clip at a time. The baseline is the float32
Keras model of the same run: each row's size and latency are set beside it,
and its top-1 class is what each row's is compared with (agreement), with the
largest logit error relative to the baseline's largest logit. Latency is the
median over the recordings after `--warmup` calls, each runtime on every core.

    KERAS_BACKEND=tensorflow python benchmarks/export_int8.py --model runs/demo_cgp/preset \
        --recordings runs/demo/data/audio/test

Writes `export_int8.json` in `--output` and prints the table.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a task preset directory (AudioClassifier.save_to_preset)")
    parser.add_argument("--recordings", required=True, help="a folder of recordings (searched recursively)")
    parser.add_argument("--max-recordings", type=int, default=None, help="the first N recordings only")
    parser.add_argument("--warmup", type=int, default=3, help="calls before the timed ones, per form")
    parser.add_argument("--output", default="benchmarks/results/export_int8")
    return parser.parse_args(argv)


def read_clips(folder, clip_samples, limit=None):
    """`(names, clips (n, clip_samples))`: every recording, cut or zero-padded to the model's clip."""
    from keras_bat.data import load_audio

    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)[:limit]
    if not paths:
        raise SystemExit(f"{folder}: no recordings ({', '.join(AUDIO_SUFFIXES)}).")
    clips = np.zeros((len(paths), clip_samples), "float32")
    for row, path in zip(clips, paths):
        samples = load_audio(str(path))[:clip_samples]
        row[:len(samples)] = samples
    return [str(p) for p in paths], clips


def litert_runner(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=os.cpu_count())
    run = interpreter.get_signature_runner()
    return lambda clip: next(iter(run(waveforms=clip).values()))


def onnx_runner(path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = os.cpu_count()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda clip: session.run(None, {name: clip})[0]


def keras_runner(model):
    import keras

    return lambda clip: keras.ops.convert_to_numpy(model.predict_on_batch(clip))


def measure(run, clips, warmup):
    """`(logits (n, classes), median seconds per clip)`, one clip at a time."""
    for clip in clips[:warmup]:
        run(clip[None])
    outputs, seconds = [], []
    for clip in clips:
        start = time.perf_counter()
        outputs.append(np.asarray(run(clip[None]))[0])
        seconds.append(time.perf_counter() - start)
    return np.stack(outputs), statistics.median(seconds)


def size_mb(path):
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def main(argv=None):
    args = parse_args(argv)
    import keras

    if keras.backend.backend() != "tensorflow":
        sys.exit("Run under KERAS_BACKEND=tensorflow: the exports are TensorFlow's (the same files serve every "
                 "runtime).")
    from keras_bat.export import export_file
    from keras_bat.models import AudioClassifier

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    model = AudioClassifier.from_preset(args.model)
    clip_samples = model.frontend.time_frames * model.frontend.hop_length
    names, clips = read_clips(args.recordings, clip_samples, args.max_recordings)
    print(f"{len(names)} recordings of {args.recordings}, {clip_samples / model.frontend.sample_rate:.2f} s clips")

    model.save(output / "float32.keras")
    forms = {"Keras float32 (baseline)": (lambda: keras_runner(model), output / "float32.keras")}
    exports = {"LiteRT float32": ("litert", None, "float32.tflite"), "LiteRT int8": ("litert", "int8", "int8.tflite"),
               "ONNX float32": ("onnx", None, "float32.onnx")}
    for name, (format, quantize, file) in exports.items():
        print(f"exporting {name} ...")
        export_file(args.model, output / file, format, quantize=quantize)
        runner = litert_runner if format == "litert" else onnx_runner
        forms[name] = (lambda runner=runner, path=output / file: runner(path), output / file)
    quantized = AudioClassifier.from_preset(args.model)
    quantized.quantize("int8")
    quantized.save(output / "int8.keras")
    forms["Keras int8 (model.quantize)"] = (lambda: keras_runner(quantized), output / "int8.keras")

    rows, baseline = {}, None
    for name, (make_runner, path) in forms.items():
        print(f"running {name} on {len(names)} clips ...")
        logits, seconds = measure(make_runner(), clips, args.warmup)
        if baseline is None:
            baseline = {"logits": logits, "seconds": seconds, "mb": size_mb(path)}
        rows[name] = {"size_mb": size_mb(path), "latency_ms": 1000 * seconds,
                      "top1_agreement": float(np.mean(logits.argmax(-1) == baseline["logits"].argmax(-1))),
                      "max_logit_error": float(np.abs(logits - baseline["logits"]).max()
                                               / np.abs(baseline["logits"]).max())}
    print(f"\n{'form':<28} {'size MB':>8} {'x size':>7} {'ms/clip':>8} {'x time':>7} {'top-1 agree':>11} "
          f"{'max logit err':>13}")
    for name, row in rows.items():
        print(f"{name:<28} {row['size_mb']:>8.2f} {row['size_mb'] / baseline['mb']:>7.2f} {row['latency_ms']:>8.2f} "
              f"{row['latency_ms'] / (1000 * baseline['seconds']):>7.2f} {row['top1_agreement']:>11.3f} "
              f"{row['max_logit_error']:>13.4f}")
    result = {"model": args.model, "recordings": args.recordings, "clips": len(names), "cpu_count": os.cpu_count(),
              "keras_backend": keras.backend.backend(), "rows": rows}
    (output / "export_int8.json").write_text(json.dumps(result, indent=2))
    print(f"\n{output / 'export_int8.json'}")
    return result


if __name__ == "__main__":
    from keras_bat.runtime import filtered_stderr

    with filtered_stderr():
        main()
