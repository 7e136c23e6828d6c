"""Audio decoding, datasets, input pipelines, augmentations and the procedural
sound-event dataset."""

from keras_bat.data.audio import AudioDecodeError, audio_info, load_audio, resample
from keras_bat.data.augment import (AudioAugmentation, colored_noise, mixup, random_gain, spec_augment,
                                    time_roll)
from keras_bat.data.datasets import (AudioDataset, CharTokenizer, Clip, audio_files, audioset,
                                     balanced_sampling_weights, birdset, csv_dataset, dcase2016_task2, esc50,
                                     folder_dataset, librispeech, speech_commands)
from keras_bat.data.pipeline import ClipLoader, Sampler, SkippedFiles, SkippedFilesLogger, StreamPosition, make_pipeline
from keras_bat.data.synthetic import SOUND_CLASSES, synthesize_clip, write_synthetic_dataset

__all__ = [
    "AudioAugmentation", "AudioDataset", "AudioDecodeError", "CharTokenizer", "Clip", "ClipLoader",
    "SOUND_CLASSES", "Sampler", "SkippedFiles", "SkippedFilesLogger", "StreamPosition",
    "audio_files", "audio_info", "audioset", "balanced_sampling_weights", "birdset", "colored_noise",
    "csv_dataset", "dcase2016_task2", "esc50", "folder_dataset", "librispeech", "load_audio",
    "make_pipeline", "mixup", "random_gain", "resample", "spec_augment", "speech_commands",
    "synthesize_clip", "time_roll", "write_synthetic_dataset",
]
