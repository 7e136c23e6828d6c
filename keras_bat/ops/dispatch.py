"""When the Triton kernels run: the torch backend, CUDA tensors, Triton importable.

`use_kernels`: `None` (auto: the environment variable `KERAS_BAT_USE_KERNELS`,
else auto), `True` (required: raise a clear error when the kernel cannot run)
or `False` (always the keras.ops path). With `True`, CPU tensors run in
Triton's interpreter when `TRITON_INTERPRET=1` was set before the kernels were
imported (for tests).
"""

import importlib.util
import os

import keras

from keras_bat.errors import UsageError

_SWITCH_ENV = "KERAS_BAT_USE_KERNELS"


def resolve_use_kernels(use_kernels=None):
    """Reads the three-state kernel switch.

    Args:
        use_kernels: `None` (auto: environment variable `KERAS_BAT_USE_KERNELS`,
            else auto), `True` (required) or `False` (off).

    Returns:
        `None`, `True` or `False`.
    """
    if use_kernels is not None:
        if not isinstance(use_kernels, bool):
            raise TypeError(f"`use_kernels` must be None, True or False. Received: {use_kernels!r}")
        return use_kernels
    value = os.environ.get(_SWITCH_ENV, "auto").strip().lower()
    choices = {"auto": None, "": None, "1": True, "on": True, "true": True,
               "0": False, "off": False, "false": False}
    if value not in choices:
        raise UsageError(f"{_SWITCH_ENV} must be one of auto, on, off. Received: {value!r}")
    return choices[value]


def kernel_unavailable_reason(tensor, required=False):
    """Why the Triton kernels cannot take `tensor` (`None` when they can)."""
    backend = keras.backend.backend()
    if backend != "torch":
        return f"the Triton kernels run under the torch backend; this is the {backend} backend"
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed (pip install triton)"
    device = getattr(tensor, "device", None)
    device_type = getattr(device, "type", "cpu")
    if device_type == "cuda":
        return None
    if required and device_type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return None  # Triton's CPU interpreter, on request
    return (f"the tensors are on {device_type}, not CUDA (set TRITON_INTERPRET=1 before the kernels are "
            "imported to run them in Triton's CPU interpreter)")


def use_kernel(tensor, use_kernels, what):
    """True when the fused kernel should run; raises when it is required and cannot."""
    choice = resolve_use_kernels(use_kernels)
    if choice is False:
        return False
    if getattr(getattr(tensor, "device", None), "type", None) == "meta":
        return False  # shape inference while a functional model is built
    reason = kernel_unavailable_reason(tensor, required=choice is True)
    if reason is not None and choice is True:
        raise RuntimeError(f"use_kernels=True asks for the fused {what} kernel, but {reason}. Use "
                           f"use_kernels=None (auto) or False (or {_SWITCH_ENV}=auto|off) for the keras.ops path.")
    return reason is None
