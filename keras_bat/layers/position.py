"""Fixed 2-D sine-cosine position tables (NumPy, built once)."""

import numpy as np

from keras_bat.errors import UsageError


def sincos_1d(dim, positions):
    """Sine-cosine embedding of `positions` (any shape) -> `(num_positions, dim)`."""
    if dim % 2:
        raise UsageError(f"Sine-cosine embeddings need an even width. Received: dim={dim}")
    omega = np.arange(dim // 2, dtype="float32") / (dim / 2.0)
    omega = 1.0 / 10000**omega  # dim / 2
    angles = np.einsum("m,d->md", positions.reshape(-1).astype("float32"), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_position_table(dim, grid_rows, grid_cols):
    """The reference's 2-D sine-cosine table for a `(grid_rows, grid_cols)` grid.

    Row `r * grid_cols + c` encodes the column index `c` in its first `dim / 2`
    channels and the row index `r` in the rest. BAT builds it for the grid
    `(frequency patches, time patches per chunk)` and adds its first `N` rows
    to `N` time-major patch tokens, exactly as the official code does.

    Args:
        dim: int, embedding width (even).
        grid_rows: int, first grid size (8 frequency patches for 128 mels).
        grid_cols: int, second grid size (64 time patches per chunk).

    Returns:
        float32 array `(grid_rows * grid_cols, dim)`.
    """
    cols, rows = np.meshgrid(np.arange(grid_cols, dtype="float32"),
                             np.arange(grid_rows, dtype="float32"))
    table = np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)
    return table.astype("float32")
