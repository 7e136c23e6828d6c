import keras
import numpy as np
import pytest
from helpers import run_layer_test, to_numpy

from keras_bat.layers import DropPath, GatedSelfAttention, TransformerBlock
from keras_bat.ops import resolve_use_kernels


def numpy_gated_attention(layer, tokens, key_mask=None, key_offset=0):
    """Straight NumPy version of the reference attention, from the layer's weights."""
    dense = lambda d, x: x @ to_numpy(d.kernel) + to_numpy(d.bias)  # noqa: E731
    b, n, dim = tokens.shape
    h, dh = layer.num_heads, layer.head_dim
    q, k, v = np.split(dense(layer.qkv, tokens), 3, axis=-1)
    q, k, v = (t.reshape(b, n, h, dh).transpose(0, 2, 1, 3) for t in (q, k, v))  # B, H, N, Dh
    k, v = k[:, :, key_offset:], v[:, :, key_offset:]
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh)
    if key_mask is not None:
        logits = np.where(key_mask[:, None, None, key_offset:], logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = (weights @ v).transpose(0, 2, 1, 3).reshape(b, n, dim)
    if layer.gate is not None:
        out = out / (1.0 + np.exp(-dense(layer.gate, tokens)))
    return dense(layer.proj, out)


@pytest.mark.parametrize("use_gate", [True, False])
def test_gated_attention_matches_numpy(use_gate):
    tokens = np.random.default_rng(0).normal(size=(2, 7, 16)).astype("float32")
    layer = GatedSelfAttention(16, 4, use_gate=use_gate)
    out = run_layer_test(layer, tokens)
    np.testing.assert_allclose(out, numpy_gated_attention(layer, tokens), atol=1e-5)
    assert (layer.gate is not None) == use_gate
    assert len(layer.trainable_weights) == (6 if use_gate else 4)


def test_gated_attention_key_mask_and_offset():
    rng = np.random.default_rng(1)
    tokens = rng.normal(size=(2, 9, 16)).astype("float32")
    key_mask = np.ones((2, 9), bool)
    key_mask[0, 6:] = False
    layer = GatedSelfAttention(16, 2)
    out = to_numpy(layer(tokens, key_mask=key_mask, key_offset=2))
    expected = numpy_gated_attention(layer, tokens, key_mask, key_offset=2)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # Masked keys are invisible: changing them changes only their own rows.
    changed = tokens.copy()
    changed[0, 6:] += 5.0
    out_changed = to_numpy(layer(changed, key_mask=key_mask, key_offset=2))
    np.testing.assert_allclose(out_changed[0, :6], out[0, :6], atol=1e-5)


# The encoders give their padding as key lengths (counted from the first token, queries included):
# every sequence padded, one with a single key, one whole.
KEY_LENGTH_CASES = {"no offset": (0, [9, 1, 6]), "offset 2": (2, [9, 3, 7])}


def _lengths_as_mask(lengths, num_tokens):
    return np.arange(num_tokens)[None, :] < np.asarray(lengths)[:, None]


@pytest.mark.parametrize("use_gate", [True, False])
@pytest.mark.parametrize("case", sorted(KEY_LENGTH_CASES))
def test_gated_attention_with_key_lengths_matches_numpy(case, use_gate):
    key_offset, lengths = KEY_LENGTH_CASES[case]
    tokens = np.random.default_rng(4).normal(size=(3, 9, 16)).astype("float32")
    layer = GatedSelfAttention(16, 2, use_gate=use_gate)
    lengths = np.array(lengths, "int32")
    eager = to_numpy(layer(tokens, key_lengths=lengths, key_offset=key_offset))
    expected = numpy_gated_attention(layer, tokens, _lengths_as_mask(lengths, 9), key_offset)
    np.testing.assert_allclose(eager, expected, atol=1e-5)
    # Compiled, as the encoders run: the lengths are a traced int tensor.
    token_input, length_input = keras.Input((9, 16)), keras.Input((), dtype="int32")
    model = keras.Model([token_input, length_input], layer(token_input, key_lengths=length_input,
                                                          key_offset=key_offset))
    np.testing.assert_allclose(model.predict_on_batch([tokens, lengths]), expected, atol=1e-5)


@pytest.mark.parametrize("case", sorted(KEY_LENGTH_CASES))
def test_blocks_on_padded_sequences_equal_blocks_on_the_sequences_alone(case):
    """What the encoders rely on: a block's outputs on a sequence's real tokens do not depend on
    its padding, and equal the block's outputs on the real tokens alone."""
    key_offset, lengths = KEY_LENGTH_CASES[case]
    rng = np.random.default_rng(5)
    tokens = rng.normal(size=(3, 9, 16)).astype("float32")
    block = TransformerBlock(16, 4, mlp_ratio=2.0)
    padded = to_numpy(block(tokens, key_lengths=np.array(lengths, "int32"), key_offset=key_offset))
    noisy = tokens + 100.0 * ~_lengths_as_mask(lengths, 9)[..., None]  # padding changed
    changed = to_numpy(block(noisy, key_lengths=np.array(lengths, "int32"), key_offset=key_offset))
    for b, length in enumerate(lengths):
        alone = to_numpy(block(tokens[b:b + 1, :length], key_offset=key_offset))[0]
        np.testing.assert_allclose(padded[b, :length], alone, atol=2e-5, err_msg=f"sequence {b}")
        np.testing.assert_allclose(changed[b, :length], alone, atol=2e-5, err_msg=f"sequence {b}")


@pytest.mark.parametrize("num_queries", [0, 2])
def test_run_blocks_counts_the_queries_in_the_key_lengths(num_queries):
    """`run_blocks` puts each block's queries in front of the tokens: every real token is a key
    (none cut off by the queries in front), no padding is, and the queries are not keys."""
    from keras_bat.models.backbone import run_blocks

    rng = np.random.default_rng(6)
    tokens = rng.normal(size=(2, 7, 16)).astype("float32")
    lengths = np.array([7, 4], "int32")
    blocks = [TransformerBlock(16, 2, mlp_ratio=2.0) for _ in range(2)]
    queries = rng.normal(size=(2, 2, num_queries, 16)).astype("float32") if num_queries else None
    chunk_weights = np.ones((2, 1), "float32")
    outputs, query_outputs = run_blocks(blocks, tokens, lengths, chunk_weights, queries)
    for b, length in enumerate(lengths):
        x = tokens[b:b + 1, :length]
        for i, block in enumerate(blocks):
            if num_queries:
                x = np.concatenate([queries[b:b + 1, i], x], axis=1)
                x = to_numpy(block(x, key_offset=num_queries))
                np.testing.assert_allclose(to_numpy(query_outputs[i])[b], x[0, :num_queries], atol=2e-5)
                x = x[:, num_queries:]
            else:
                x = to_numpy(block(x))
            np.testing.assert_allclose(to_numpy(outputs[i])[b, :length], x[0], atol=2e-5,
                                       err_msg=f"block {i}, sequence {b}")


def test_beats_attention_with_key_lengths_ignores_the_padding():
    from keras_bat.models.beats.beats_layers import BEATsAttention

    rng = np.random.default_rng(7)
    tokens = rng.normal(size=(3, 9, 16)).astype("float32")
    bias = rng.normal(size=(2, 9, 7)).astype("float32")  # H, queries, keys after the offset
    lengths = np.array([9, 3, 6], "int32")
    layer = BEATsAttention(16, 2)
    out = to_numpy(layer(tokens, bias, key_lengths=lengths, key_offset=2))
    masked = to_numpy(layer(tokens, bias, key_mask=_lengths_as_mask(lengths, 9), key_offset=2))
    np.testing.assert_allclose(out, masked, atol=1e-5)
    noisy = tokens + 100.0 * ~_lengths_as_mask(lengths, 9)[..., None]
    changed = to_numpy(layer(noisy, bias, key_lengths=lengths, key_offset=2))
    for b, length in enumerate(lengths):
        np.testing.assert_allclose(changed[b, :length], out[b, :length], atol=2e-5)
    # Every real key counts: the last one's value moves the outputs.
    moved = tokens.copy()
    moved[:, -1] += 1.0
    assert not np.allclose(to_numpy(layer(moved, bias, key_lengths=lengths, key_offset=2))[0, :2], out[0, :2])


def test_attention_rejects_bad_heads():
    with pytest.raises(ValueError, match="divisible by `num_heads`"):
        GatedSelfAttention(10, 3)


def test_kernel_switch(monkeypatch):
    monkeypatch.setenv("KERAS_BAT_USE_KERNELS", "off")
    assert resolve_use_kernels() is False
    monkeypatch.setenv("KERAS_BAT_USE_KERNELS", "sometimes")
    with pytest.raises(ValueError, match="KERAS_BAT_USE_KERNELS"):
        resolve_use_kernels()
    with pytest.raises(TypeError, match="use_kernels"):
        resolve_use_kernels("yes")


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_block_matches_numpy(norm_first):
    tokens = np.random.default_rng(2).normal(size=(2, 5, 16)).astype("float32")
    block = TransformerBlock(16, 4, mlp_ratio=2.0, norm_first=norm_first)
    out = run_layer_test(block, tokens)

    def norm(layer, x):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-6) * to_numpy(layer.gamma) + to_numpy(layer.beta)

    def mlp(x):
        from scipy.special import erf

        hidden = x @ to_numpy(block.fc1.kernel) + to_numpy(block.fc1.bias)
        hidden = 0.5 * hidden * (1.0 + erf(hidden / np.sqrt(2.0)))
        return hidden @ to_numpy(block.fc2.kernel) + to_numpy(block.fc2.bias)

    if norm_first:
        x = tokens + numpy_gated_attention(block.attn, norm(block.norm1, tokens))
        expected = x + mlp(norm(block.norm2, x))
    else:
        x = norm(block.norm1, tokens + numpy_gated_attention(block.attn, tokens))
        expected = norm(block.norm2, x + mlp(x))
    np.testing.assert_allclose(out, expected, atol=2e-5)


def test_drop_path_drops_whole_examples():
    x = np.ones((64, 3, 4), "float32")
    layer = DropPath(0.5, seed=1)
    np.testing.assert_array_equal(to_numpy(layer(x)), x)  # inference: identity
    out = to_numpy(layer(x, training=True))
    per_example = np.unique(out.reshape(64, -1), axis=1)
    assert per_example.shape[1] == 1  # each example kept (x2) or dropped (0) whole
    assert set(np.unique(out)) <= {0.0, 2.0} and 0 < (out[:, 0, 0] == 0).sum() < 64
    with pytest.raises(ValueError, match="rate"):
        DropPath(1.0)


def test_block_dropout_is_active_only_in_training():
    tokens = np.random.default_rng(3).normal(size=(4, 5, 16)).astype("float32")
    block = TransformerBlock(16, 4, dropout=0.5, drop_path=0.3)
    np.testing.assert_array_equal(to_numpy(block(tokens)), to_numpy(block(tokens)))
    assert not np.allclose(to_numpy(block(tokens, training=True)), to_numpy(block(tokens)))
    assert keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(block)).get_config() == block.get_config()


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_dense_equals_keras_dense(policy):
    # keras_bat.layers.Dense projects in one fused call (addmm under torch); same weights, same result.
    from keras_bat.layers import Dense

    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    ours, reference = Dense(6, dtype=policy), keras.layers.Dense(6, dtype=policy)
    ours.build(x.shape)
    reference.build(x.shape)
    reference.set_weights(ours.get_weights())
    tolerance = 1e-6 if policy == "float32" else 2e-2
    np.testing.assert_allclose(to_numpy(ours(x)), to_numpy(reference(x)), atol=tolerance, rtol=tolerance)
    assert keras.backend.standardize_dtype(ours(x).dtype) == reference.compute_dtype
