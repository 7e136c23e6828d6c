"""Inverse block masking of the (time, frequency) patch grid, for pretraining."""

import keras
from keras import ops

from keras_bat.errors import UsageError


def inverse_block_mask(batch_size, time_patches, freq_patches, mask_ratio=0.8, block_size=5,
                       mask_prob_adjust=0.07, seed=None):
    """Draws BAT's inverse block masks, inside a compiled step if need be.

    Random block centres (their number set by the keep ratio plus
    `mask_prob_adjust`) grow into `block_size x block_size` blocks of KEPT
    patches; then each row is adjusted to exactly `int(N * (1 - mask_ratio))`
    kept patches, dropping random kept ones or adding random others.

    Args:
        batch_size: int, number of masks (clips x views).
        time_patches: int, patch grid height (time).
        freq_patches: int, patch grid width (frequency).
        mask_ratio: float, share of removed patches. Defaults to `0.8`.
        block_size: int, block side in patches. Defaults to `5`.
        mask_prob_adjust: float, extra centre density. Defaults to `0.07`.
        seed: int, `keras.random.SeedGenerator` or `None`.

    Returns:
        Dict with `ids_keep_sorted` `(batch, num_kept)` int32, ascending
        time-major indices of the kept patches, and `mask` `(batch, N)`
        float32, 1 for removed patches.
    """
    if not 0.0 < mask_ratio < 1.0:
        raise UsageError(f"`mask_ratio` must be in (0, 1). Received: {mask_ratio}")
    num_patches = time_patches * freq_patches
    num_kept = int(num_patches * (1.0 - mask_ratio))
    num_centres = int(num_patches * (1.0 - mask_ratio + mask_prob_adjust) / block_size**2)
    seed = seed if isinstance(seed, keras.random.SeedGenerator) else keras.random.SeedGenerator(seed)
    centres = keras.random.randint((batch_size, max(num_centres, 1)), 0, num_patches, seed=seed)
    blocks = ops.max(ops.one_hot(centres, num_patches), axis=1)  # B, N
    blocks = ops.reshape(blocks, (batch_size, time_patches, freq_patches, 1))
    blocks = ops.max_pool(blocks, pool_size=block_size, strides=1, padding="same")
    blocks = ops.reshape(blocks, (batch_size, num_patches))
    # Block patches rank first (in random order), then the others at random: the
    # first `num_kept` are kept, whether that drops or adds patches.
    scores = blocks + keras.random.uniform((batch_size, num_patches), seed=seed)
    _, ids_keep = ops.top_k(scores, num_kept)
    ids_keep = ops.sort(ops.cast(ids_keep, "int32"), axis=1)
    mask = 1.0 - ops.sum(ops.one_hot(ids_keep, num_patches), axis=1)
    return {"ids_keep_sorted": ids_keep, "mask": mask}
