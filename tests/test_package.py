import importlib

import keras_bat


def test_public_names():
    assert keras_bat.BATBackbone is keras_bat.models.BATBackbone
    assert keras_bat.LogMelSpectrogram is keras_bat.layers.LogMelSpectrogram
    assert callable(keras_bat.convert.load_official_weights)


def test_kernels_folder_installs_under_its_import_name():
    kernels = importlib.import_module("keras_bat_kernels")
    assert kernels.__file__.replace("\\", "/").endswith("kernels/__init__.py")
