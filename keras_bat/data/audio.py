"""Audio decoding: any file libsndfile reads (wav, flac, ogg, mp3, ...) to a
mono float32 waveform at the model's sample rate, with clear errors for bad
files."""

import os
import re
import threading

import numpy as np

from keras_bat.errors import UsageError

SAMPLE_RATE = 16000
# BAT's time patch (16 frames of 10 ms): the default grid of frame targets and events; a probe
# passes its encoder's own (`EncoderModel.seconds_per_patch`).
PATCH_SECONDS = 0.16
# Sample rates outside this range are not audio a model of 16 kHz can use.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 768000


class AudioDecodeError(ValueError):
    """A file that cannot be used as audio. `path` names it, `reason` says why
    in a few words (what pipelines count in their logs)."""

    def __init__(self, path, reason, detail=""):
        self.path = os.fspath(path)
        self.reason = reason
        message = f"{self.path}: {reason}"
        super().__init__(f"{message} ({detail})" if detail else message)


def audio_info(path):
    """Duration and format of an audio file, from what its decoder reads.

    Uncompressed files (PCM, float, u-law, A-law) are measured from their
    data's size; compressed streams (MP3, FLAC, Ogg, ...) are decoded once,
    a block at a time, and counted: an MP3 header without a Xing/LAME tag
    only estimates the length from the bitrate, off by thousands of frames.

    Returns:
        dict with `sample_rate`, `frames` (what decodes), `channels`,
        `duration` (seconds) and `truncated` (the file declares more audio
        than it holds: a cut WAV, or a stream that ends early).

    Raises:
        AudioDecodeError: missing, empty or unreadable file.
    """
    import soundfile

    _check_file(path)
    try:
        with soundfile.SoundFile(os.fspath(path)) as sound:
            declared, rate = sound.frames, sound.samplerate
            frames = declared if _exact_length(sound) else _count_frames(sound)
            truncated = _declares_more_data(sound) or _ends_early(frames, declared, rate)
            channels = sound.channels
    except AudioDecodeError:
        raise
    except Exception as error:  # libsndfile raises its own error types
        raise AudioDecodeError(path, "not a readable audio file", str(error).strip()[:300]) from None
    return {"sample_rate": rate, "frames": frames, "channels": channels,
            "duration": frames / rate if rate else 0.0, "truncated": truncated}


DECODERS = ("soundfile", "tfio")


def load_audio(path, sample_rate=SAMPLE_RATE, offset=0.0, duration=None, max_duration=3600.0,
               allow_silence=False, decoder="soundfile", resampler="soxr", keep_truncated=False):
    """Decodes an audio file to a mono float32 waveform at `sample_rate`.

    Channels are averaged; other sample rates are resampled with soxr (high
    quality). Only the requested segment is read from disk. A stream read to
    its end stops where its decoder stops, whatever the header estimated.

    Args:
        path: str or path-like.
        sample_rate: int, output rate. Defaults to 16000.
        offset: float, start of the segment in seconds. Defaults to `0.0`.
        duration: float or `None`, length of the segment in seconds; `None`
            reads to the end.
        max_duration: float or `None`, longest segment accepted, in seconds
            (guards against hour-long files read by mistake). Defaults to 3600.
        allow_silence: bool, accept all-zero audio. Defaults to `False`.
        decoder: `"soundfile"` (libsndfile) or `"tfio"` (tensorflow-io's
            native decoders, from the `[tfio]` stack); both give the same
            samples (within 1e-6 for wav, flac, ogg and mp3).
        resampler: `"soxr"` (high quality) or `"tfio"`
            (`tfio.audio.resample`, which is not soxr: it differs from it by a
            32-sample delay and its filter at 44.1 -> 16 kHz).
        keep_truncated: bool, return what decodes of a truncated file (see
            `audio_info`) instead of raising. Defaults to `False`.

    Returns:
        float32 array `(samples,)`.

    Raises:
        AudioDecodeError: naming the file and the problem: missing, empty,
            not audio, corrupt or truncated, odd sample rate, NaN/inf samples,
            silent, no samples in the segment, or longer than `max_duration`.
    """
    if decoder not in DECODERS:
        raise UsageError(f"`decoder` must be one of {DECODERS}. Received: {decoder!r}")
    _check_file(path)
    read = _read_soundfile if decoder == "soundfile" else _read_tfio
    try:
        waveform, rate, truncated = read(path, offset, duration, max_duration)
    except AudioDecodeError:
        raise
    except Exception as error:  # the decoders' own errors: corrupt header, lost sync, not audio
        raise AudioDecodeError(path, "not a readable audio file", str(error).strip()[:300]) from None
    if waveform.shape[0] == 0:
        raise AudioDecodeError(path, "no samples", f"nothing to read at offset {offset} s")
    if truncated and not keep_truncated:
        raise AudioDecodeError(path, "truncated file", truncated)
    if not np.isfinite(waveform).all():
        raise AudioDecodeError(path, "NaN or inf samples")
    waveform = waveform.mean(axis=1)  # mono mix-down
    if not allow_silence and not np.any(waveform):
        raise AudioDecodeError(path, "silent (all samples are zero)")
    return resample(waveform, rate, sample_rate, resampler)


def _segment(path, rate, frames, offset, duration, max_duration):
    """Checks the rate; returns the first frame and the number of frames to read."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioDecodeError(path, "unsupported sample rate",
                               f"{rate} Hz; expected {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz")
    start = int(round(offset * rate))
    if start >= frames:
        raise AudioDecodeError(path, "no samples", f"offset {offset} s is past the end ({frames / rate:.3f} s)")
    wanted = frames - start if duration is None else min(int(round(duration * rate)), frames - start)
    if max_duration is not None and wanted > max_duration * rate:
        raise AudioDecodeError(path, "too long", f"{wanted / rate:.0f} s > max_duration {max_duration:.0f} s")
    return start, max(wanted, 0)


# Frames decoded before a seek target in a compressed stream and dropped: the first frames after a
# seek come out wrong (MP3's bit reservoir: up to ~440 samples; Vorbis' overlap: ~20).
SEEK_CONTEXT_FRAMES = 4096


def _read_soundfile(path, offset, duration, max_duration):
    """`(samples (frames, channels), rate, why the file is truncated or "")`."""
    import soundfile

    with soundfile.SoundFile(os.fspath(path)) as sound:
        start, wanted = _segment(path, sound.samplerate, sound.frames, offset, duration, max_duration)
        truncated = "the header promises more data than the file holds" if _declares_more_data(sound) else ""
        context = 0 if _exact_length(sound) else min(start, SEEK_CONTEXT_FRAMES)
        if start - context > 0:
            sound.seek(start - context)
        samples = sound.read(wanted + context, dtype="float32", always_2d=True)[context:]
        if not truncated and len(samples) < wanted and _ends_early(start + len(samples), sound.frames,
                                                                    sound.samplerate):
            truncated = f"decoded {start + len(samples)} of the {sound.frames} frames its header declares"
        return samples, sound.samplerate, truncated


_INTEGER_SCALE = {"int16": 2.0**15, "int32": 2.0**31, "uint8": 2.0**7}
# tensorflow-io's AudioIOTensor mixes up files decoded from several threads at once.
_TFIO_LOCK = threading.Lock()


def _read_tfio(path, offset, duration, max_duration):
    import tensorflow_io as tfio

    with _TFIO_LOCK:
        audio = tfio.audio.AudioIOTensor(os.fspath(path))
        rate, frames = int(audio.rate.numpy()), int(audio.shape[0].numpy())
        start, wanted = _segment(path, rate, frames, offset, duration, max_duration)
        samples = audio[start:start + wanted].numpy()
    dtype = samples.dtype.name
    samples = samples.astype("float32")
    if dtype == "uint8":
        samples -= 128.0
    truncated = f"read {len(samples)} of {wanted} frames" if len(samples) < 0.99 * wanted else ""
    return samples / _INTEGER_SCALE.get(dtype, 1.0), rate, truncated


def load_window(path, start, stop, clip_samples, sample_rate=SAMPLE_RATE, info=None):
    """Samples `[start, stop)` of a clip of `clip_samples` samples at
    `sample_rate` made of the file's first samples (zero-padded past the
    file's end), reflected beyond the clip's ends as a centred STFT pads it.
    `info`: the file's `audio_info`, when the caller has it (read otherwise).

    Only the samples needed are read from disk (files at another rate are
    resampled with a quarter second of context on each side), so that a long
    recording can be framed a window at a time in constant memory.
    """
    index = _window_index(path, start, stop, clip_samples)
    low, high = int(index.min()), int(index.max()) + 1
    segment = np.zeros(high - low, "float32")
    info = info or audio_info(path)
    file_samples = int(round(info["frames"] * sample_rate / info["sample_rate"]))
    readable = min(high, file_samples)
    if readable > low:
        context = 0 if info["sample_rate"] == sample_rate else sample_rate // 4
        first = max(low - context, 0)
        samples = load_audio(path, sample_rate, offset=first / sample_rate,
                             duration=(min(readable + context, file_samples) - first) / sample_rate,
                             max_duration=None, allow_silence=True,
                             keep_truncated=True)[low - first:readable - first]
        segment[:len(samples)] = samples
    return segment[index - low]


def waveform_window(waveform, start, stop, name="the waveform"):
    """Samples `[start, stop)` of a mono waveform in memory, reflected beyond its ends as
    `load_window` reflects a file's clip."""
    return np.asarray(waveform, "float32")[_window_index(name, start, stop, len(waveform))]


def _window_index(source, start, stop, clip_samples):
    """The clip's sample index of each sample of the window `[start, stop)`: reflected at the clip's
    start and end, as a centred STFT pads it."""
    if clip_samples < 2:
        raise AudioDecodeError(source, "too short", f"{clip_samples} samples")
    index = np.abs(np.arange(start, stop))
    index = np.where(index >= clip_samples, 2 * (clip_samples - 1) - index, index)
    if index.min() < 0:
        raise AudioDecodeError(source, "too short", f"{clip_samples} samples cannot be framed by a "
                                                    f"{stop - start}-sample window")
    return index


def mono_waveform(waveform, sample_rate, target_rate=SAMPLE_RATE, name="the waveform"):
    """A waveform of any channel count and rate as a mono float32 waveform at `target_rate`:
    `(samples,)`, or 2-D with channels on the shorter axis (`(channels, samples)` as torchaudio
    gives them, `(samples, channels)` as soundfile does), channels averaged, resampled with soxr."""
    waveform = np.asarray(waveform, "float32")
    if waveform.ndim == 2:
        waveform = waveform.mean(axis=int(np.argmin(waveform.shape)))
    if waveform.ndim != 1 or waveform.size == 0:
        raise UsageError(f"{name}: expected a waveform (samples,) or (channels, samples); received shape "
                         f"{waveform.shape}.")
    if not np.all(np.isfinite(waveform)):
        raise UsageError(f"{name}: the waveform holds NaN or infinite samples.")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise UsageError(f"{name}: sample_rate {sample_rate!r} is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz.")
    return resample(waveform, int(sample_rate), target_rate)


def resample(waveform, rate_in, rate_out=SAMPLE_RATE, resampler="soxr"):
    """Resamples a 1-D float32 waveform with soxr (high quality), or with
    `tfio.audio.resample` (`resampler="tfio"`)."""
    if rate_in == rate_out:
        return np.asarray(waveform, dtype="float32")
    if resampler == "tfio":
        import tensorflow_io as tfio

        return tfio.audio.resample(np.asarray(waveform, "float32")[:, None], rate_in, rate_out).numpy()[:, 0]
    if resampler != "soxr":
        raise UsageError(f"`resampler` must be 'soxr' or 'tfio'. Received: {resampler!r}")
    import soxr

    return soxr.resample(np.asarray(waveform, dtype="float32"), rate_in, rate_out, quality="HQ")


def _check_file(path):
    if not os.path.isfile(path):
        raise AudioDecodeError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise AudioDecodeError(path, "empty file")


# Subtypes whose frame count libsndfile derives from the data's size: exact, also for a cut file.
UNCOMPRESSED_SUBTYPES = ("PCM_", "FLOAT", "DOUBLE", "ULAW", "ALAW")


def _exact_length(sound):
    return sound.subtype.startswith(UNCOMPRESSED_SUBTYPES)


def _count_frames(sound, block=65536):
    """Frames that decode from the current position to the end, in constant memory."""
    buffer, count = np.empty((block, sound.channels), "float32"), 0
    while True:
        read = len(sound.read(block, dtype="float32", out=buffer))
        count += read
        if read < block:
            return count


def _ends_early(decoded, declared, rate):
    """Whether a stream that decodes to `decoded` frames falls short of the `declared` ones by
    more than a header's estimate can be off (2 % and half a second)."""
    return declared - decoded > 0.02 * declared + 0.5 * rate


def _declares_more_data(sound):
    # libsndfile reads a cut WAV/AIFF up to where it ends and notes the
    # mismatch as "data : <declared> (should be <actual>)".
    match = re.search(r"data\s*:\s*(\d+)\s*\(should be (\d+)\)", sound.extra_info)
    return bool(match) and int(match.group(1)) > int(match.group(2))
