"""Multi-device training on keras.distribution (JAX): data parallelism, and
model parallelism that shards the encoder's large matrices.

Multi-host: start every process with the same coordinator before building
models, e.g. `keras.distribution.initialize("10.0.0.1:1234", num_processes=4,
process_id=i)` (a wrapper of `jax.distributed.initialize`); the devices of all
hosts then form one mesh.
"""

import keras

KINDS = ("data_parallel", "model_parallel")


def encoder_layout_map(mesh, model_axis="model"):
    """Shards BAT's attention and MLP matrices over `model_axis`: the
    projections into heads / hidden units column-wise, the projections back
    row-wise (Megatron style); everything else is replicated."""
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[r".*attn/(qkv|gate)/kernel"] = (None, model_axis)
    layout_map[r".*attn/(qkv|gate)/bias"] = (model_axis,)
    layout_map[r".*attn/proj/kernel"] = (model_axis, None)
    layout_map[r".*fc1/kernel"] = (None, model_axis)
    layout_map[r".*fc1/bias"] = (model_axis,)
    layout_map[r".*fc2/kernel"] = (model_axis, None)
    return layout_map


def make_distribution(kind, model_parallel=2, devices=None):
    """A keras.distribution for all (or the given) devices.

    Args:
        kind: `"data_parallel"` (the batch split over devices, weights
            replicated) or `"model_parallel"` (a `batch x model` mesh with
            `model_parallel` devices on the model axis, encoder matrices
            sharded by `encoder_layout_map`).
        model_parallel: int, devices along the model axis.
        devices: optional list of device names (default: all).

    Returns:
        A `keras.distribution.Distribution`; activate it with
        `keras.distribution.set_distribution` before building models.
    """
    if keras.backend.backend() != "jax":
        raise ValueError(f"keras.distribution runs on the JAX backend; this is {keras.backend.backend()}. "
                         "Set KERAS_BACKEND=jax (see the README for the other backends).")
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}. Received: {kind!r}")
    devices = devices or keras.distribution.list_devices()
    if kind == "data_parallel":
        return keras.distribution.DataParallel(devices=devices)
    if model_parallel < 1 or len(devices) % model_parallel:
        raise ValueError(f"model_parallel={model_parallel} must divide the {len(devices)} devices.")
    mesh = keras.distribution.DeviceMesh((len(devices) // model_parallel, model_parallel), ["batch", "model"],
                                         devices)
    return keras.distribution.ModelParallel(layout_map=encoder_layout_map(mesh), batch_dim_name="batch")


def setup_distribution(config, batch_sizes=None):
    """Activates the `distribution` section of a run config (`kind: null`
    leaves the default single-device placement).

    Args:
        config: the run config's `distribution` section.
        batch_sizes: optional dict `setting -> batch size` of the run's
            training batch sizes, each of which must split evenly over the
            devices of the batch axis.
    """
    if not config or not config.get("kind"):
        return None
    distribution = make_distribution(config["kind"], config.get("model_parallel", 2))
    mesh = distribution.device_mesh
    devices = mesh.shape[list(mesh.axis_names).index(distribution.batch_dim_name)]
    for setting, batch_size in (batch_sizes or {}).items():
        if batch_size % devices:
            raise ValueError(f"{setting}={batch_size} does not split over the {devices} devices of the "
                             f"{config['kind']} batch axis: use a multiple of {devices}.")
    keras.distribution.set_distribution(distribution)
    return distribution
