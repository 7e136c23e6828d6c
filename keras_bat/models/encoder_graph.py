"""What every encoder model shares: its inputs, the blocks run over time chunks
with optional query tokens, config round trips and preset directories."""

import json
import os

import keras

from keras_bat.convert.official import CONFIG_FILE, WEIGHTS_FILE, save_official_weights

from keras_bat.layers.patching import PrependQueries


def encoder_inputs(num_mels, depth, dim, use_padding_mask=False, num_query_tokens=0):
    """`(inputs, spectrogram, padding_mask, query_tokens)`: the `keras.Input`s of
    an encoder (`inputs` is the spectrogram alone or a dict; absent ones are `None`)."""
    spectrogram = keras.Input(shape=(None, num_mels), name="spectrogram")
    inputs = {"spectrogram": spectrogram}
    padding_mask = query_tokens = None
    if use_padding_mask:
        padding_mask = inputs["padding_mask"] = keras.Input(shape=(None,), name="padding_mask")
    if num_query_tokens:
        query_tokens = inputs["query_tokens"] = keras.Input(shape=(depth, num_query_tokens, dim), name="query_tokens")
    return (spectrogram if len(inputs) == 1 else inputs), spectrogram, padding_mask, query_tokens


def run_blocks(blocks, tokens, key_lengths, chunk_weights, query_tokens=None, dtype=None, **block_arguments):
    """Runs `blocks` over chunked tokens whose padding is given as `key_lengths`
    `(batch * chunks,)` (computed once, read by every block); with query tokens
    `(batch, depth, Q, dim)`, each block's are put in front of the tokens as
    queries that are not keys, and their outputs are kept.

    Returns:
        `(block_outputs, query_outputs)`: each block's token outputs, and each
        block's query outputs (`None` without query tokens).
    """
    block_outputs, query_outputs = [], None
    if query_tokens is None:
        for block in blocks:
            tokens = block(tokens, key_lengths=key_lengths, **block_arguments)
            block_outputs.append(tokens)
        return block_outputs, None
    num_queries = query_tokens.shape[2]
    prepend_queries = PrependQueries(dtype=dtype, name="prepend_queries")
    lengths = key_lengths + num_queries  # the queries come first
    query_outputs = []
    for i, block in enumerate(blocks):
        x = prepend_queries(tokens, query_tokens[:, i], chunk_weights)
        x = block(x, key_lengths=lengths, key_offset=num_queries, **block_arguments)
        query_outputs.append(x[:, :num_queries])
        tokens = x[:, num_queries:]
        block_outputs.append(tokens)
    return block_outputs, query_outputs


class EncoderModel(keras.Model):
    """Base of the encoder models: `from_config` (with its dtype policy) and
    `save_to_preset`, which writes `config.json` and `model.safetensors` under
    the official parameter names that `official_parameters()` gives."""

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)

    def official_parameters(self):
        raise NotImplementedError

    def save_to_preset(self, directory):
        """Writes `config.json` and `model.safetensors` (official names) to `directory`."""
        os.makedirs(directory, exist_ok=True)
        config = {k: v for k, v in self.get_config().items() if k not in ("name", "trainable", "dtype")}
        with open(os.path.join(directory, CONFIG_FILE), "w") as f:
            json.dump(config, f, indent=2)
        save_official_weights(self, os.path.join(directory, WEIGHTS_FILE), self.official_parameters())
