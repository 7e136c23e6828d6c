"""Triton kernels of keras-bat, installed as `keras_bat_kernels`.

This package holds GPU kernels and their pure-PyTorch references only (no
Keras import); `keras_bat.ops` decides when to call them.
"""
