"""Input-pipeline throughput: clips per second from audio files to batches
(decoding, resampling, clip handling), and with the log-mel frontend applied to
each batch, per engine (tf.data, grain) and decoder (soundfile, tensorflow-io
when installed).

    python benchmarks/pipeline_throughput.py --clips 96 --rate 44100 --format flac
"""

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np


def write_clips(folder, count, seconds, rate, audio_format):
    import soundfile

    from keras_bat.data import AudioDataset, Clip
    from keras_bat.data.synthetic import synthesize_clip

    rng = np.random.default_rng(0)
    clips = []
    for i in range(count):
        waveform, _ = synthesize_clip([i % 8, (i + 3) % 8], seconds, rng, rate)
        path = os.path.join(folder, f"{i}.{audio_format}")
        soundfile.write(path, waveform, rate)
        clips.append(Clip(path, i % 8))
    return AudioDataset(clips, "multiclass", [str(i) for i in range(8)], "benchmark")


def measure(dataset, engine, decoder, frontend, batch_size, seconds, workers, repeats):
    import keras

    from keras_bat.data import make_pipeline

    rates = []
    for _ in range(repeats + 1):  # the first pass warms up (tracing, file cache)
        start = time.perf_counter()
        count = 0
        for waveforms, _ in make_pipeline(dataset, batch_size, seconds, training=True, engine=engine,
                                          decoder=decoder, num_workers=workers):
            if frontend is not None:
                keras.ops.convert_to_numpy(frontend(keras.ops.convert_to_tensor(np.asarray(waveforms))))
            count += len(waveforms)
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates[1:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=96)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=44100, help="sample rate of the files (resampled to 16 kHz)")
    parser.add_argument("--format", default="flac", choices=("wav", "flac", "ogg", "mp3"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default="benchmarks/results/pipeline_throughput.json")
    args = parser.parse_args()

    import keras

    from keras_bat.layers import LogMelSpectrogram

    engines = ["tf"]
    try:
        import grain  # noqa: F401
        engines.append("grain")
    except ImportError:
        pass
    decoders = ["soundfile"]
    try:
        import tensorflow_io  # noqa: F401
        decoders.append("tfio")
    except ImportError:
        pass
    frontend = LogMelSpectrogram(time_frames=int(args.seconds * 100))
    results = []
    with tempfile.TemporaryDirectory() as folder:
        dataset = write_clips(folder, args.clips, args.seconds, args.rate, args.format)
        for engine in engines:
            for decoder in decoders:
                for with_frontend in (False, True):
                    rate = measure(dataset, engine, decoder, frontend if with_frontend else None, args.batch_size,
                                   args.seconds, args.workers, args.repeats)
                    results.append({"engine": engine, "decoder": decoder, "frontend": with_frontend,
                                    "clips_per_s": rate})
    print(f"{args.clips} clips of {args.seconds} s, {args.format} at {args.rate} Hz -> 16 kHz, batch "
          f"{args.batch_size}, {args.workers} workers, backend {keras.backend.backend()}, {os.cpu_count()} CPUs")
    print(f"{'engine':8s} {'decoder':10s} {'frontend':>8s} {'clips/s':>9s}")
    for r in results:
        print(f"{r['engine']:8s} {r['decoder']:10s} {str(r['frontend']):>8s} {r['clips_per_s']:9.1f}")
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"config": vars(args), "backend": keras.backend.backend(), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
