"""Parameter tables: which Keras variable each official parameter name fills, and how.

A converter (or a head's `official_parameters`) returns a dict `official name -> Param`;
`assign_parameters` checks a whole state dict against it before assigning anything.
PyTorch's `Linear` weights are `(out, in)` and are transposed; its position tables carry a
leading batch axis.
"""

import numpy as np

from keras_bat.errors import UsageError

# Prefixes tried, in order, when a checkpoint's keys are not bare encoder names.
KNOWN_PREFIXES = ("", "encoder.", "student.encoder.", "module.encoder.", "model.encoder.",
                  "backbone.", "model.", "module.")


class Param:
    """One Keras variable filled from one or more official parameters.

    Args:
        variable: the Keras variable.
        to_keras: converts the official array(s) to the variable's layout.
        to_official: converts the variable back (a single source only).
        extra_sources: further official names whose arrays `to_keras` takes
            after the main one (e.g. PyTorch's second LSTM bias).
    """

    def __init__(self, variable, to_keras=None, to_official=None, extra_sources=()):
        self.variable = variable
        self.to_keras = to_keras or (lambda x: x)
        self.to_official = to_official or (lambda x: x)
        self.extra_sources = tuple(extra_sources)

    def official_shape(self):
        return self.to_official(np.zeros(self.variable.shape, "float32")).shape


def linear(name, dense):
    """A PyTorch `Linear` called `name` -> a Keras `Dense`."""
    params = {f"{name}.weight": Param(dense.kernel, np.transpose, np.transpose)}
    if dense.use_bias:
        params[f"{name}.bias"] = Param(dense.bias)
    return params


def layer_norm(name, norm):
    """A PyTorch `LayerNorm` called `name` -> a Keras `LayerNormalization`."""
    return {f"{name}.weight": Param(norm.gamma), f"{name}.bias": Param(norm.beta)}


def position_table(variable):
    """A position table `(N, D)` stored officially as `(1, N, D)`."""
    return Param(variable, to_keras=lambda w: w[0], to_official=lambda w: w[None])


def lstm(name, layer, bidirectional):
    """Layer `layer` of a bidirectional PyTorch `LSTM` called `name` -> a Keras `Bidirectional(LSTM)`."""
    params = {}
    for suffix, lstm_layer in (("", bidirectional.forward_layer), ("_reverse", bidirectional.backward_layer)):
        cell, tag = lstm_layer.cell, f"l{layer}{suffix}"
        params[f"{name}.weight_ih_{tag}"] = Param(cell.kernel, np.transpose, np.transpose)
        params[f"{name}.weight_hh_{tag}"] = Param(cell.recurrent_kernel, np.transpose, np.transpose)
        # PyTorch keeps two biases that are always added; Keras keeps their sum.
        params[f"{name}.bias_ih_{tag}"] = Param(
            cell.bias, to_keras=lambda ih, hh: ih + hh, extra_sources=(f"{name}.bias_hh_{tag}",))
    return params


def choose_prefix(state, expected):
    """The prefix under which `state` holds the most `expected` names: one of `KNOWN_PREFIXES`
    (first on a tie), or whatever wrapper's prefix the keys carry (e.g. a release's
    `audio_model.encoder.`)."""
    candidates = list(KNOWN_PREFIXES)
    for name in list(expected)[:8]:
        found = find_prefix(state, name)
        if found is not None and found not in candidates:
            candidates.append(found)
    return max(candidates, key=lambda prefix: sum(prefix + name in state for name in expected))


def assign_parameters(expected, state, prefix, skip_unexpected, model_name, constants=None):
    """Checks a state dict against `expected` parameters, then assigns them all.

    Args:
        expected: dict `official name -> Param`.
        state: dict `name -> array`.
        prefix: str, prefix of the official names in `state`.
        skip_unexpected: bool, ignore keys under `prefix` that nothing uses.
        model_name: str, named in the error.
        constants: optional dict `official name -> value` of buffers that are
            not weights but must hold this value (e.g. a scale fixed by the
            configuration).

    Raises:
        ValueError: listing every missing, unexpected or mis-shaped key, and
            every constant that disagrees; nothing is assigned then.
    """
    constants = constants or {}
    used = set(constants)
    mismatched, disagreeing, missing = [], [], []
    for name, param in expected.items():
        for source in (name,) + param.extra_sources:
            used.add(source)
            key = prefix + source
            if key not in state:
                missing.append(source)
            elif tuple(state[key].shape) != tuple(param.official_shape()):
                mismatched.append(f"{key!r}: checkpoint {tuple(state[key].shape)} vs model "
                                  f"{tuple(param.official_shape())}")
    for name, value in constants.items():
        key = prefix + name
        if key not in state:
            missing.append(name)
        elif not np.allclose(state[key], value, rtol=1e-6):
            disagreeing.append(f"{key!r} is {state[key]!r} in the checkpoint but {value!r} for this model")
    unexpected = sorted(key for key in state if key.startswith(prefix) and key[len(prefix):] not in used)
    if skip_unexpected:
        unexpected = []
    kinds = [(f"missing keys (prefix {prefix!r})", [repr(name) for name in missing]),
             ("shape mismatches", mismatched), ("constants that disagree", disagreeing),
             ("unexpected keys (pass skip_unexpected=True to ignore them)", [repr(key) for key in unexpected])]
    kinds = [(kind, items) for kind, items in kinds if items]
    if kinds:
        # First line: what a command line shows; then every problem, one per line.
        summary = "; ".join(f"{len(items)} {kind}, e.g. {items[0]}" for kind, items in kinds)
        details = [f"{kind}: {item}" for kind, items in kinds for item in items]
        raise UsageError(f"The checkpoint does not fit this {model_name}: {summary}\n  " + "\n  ".join(details))
    for name, param in expected.items():
        arrays = [state[prefix + source] for source in (name,) + param.extra_sources]
        value = np.asarray(param.to_keras(*arrays))
        param.variable.assign(value.astype(param.variable.dtype))


def find_prefix(state, marker):
    """The prefix under which `state` holds the key `marker` (e.g. `"blocks.0.attn.qkv.weight"`),
    whatever wraps it (`model.encoder.`, ...), or `None`. The shortest prefix wins."""
    prefixes = [key[:-len(marker)] for key in state if key.endswith(marker) and
                (len(key) == len(marker) or key[-len(marker) - 1] == ".")]
    return min(prefixes, key=len) if prefixes else None


def count_blocks(state, prefix, pattern):
    """How many blocks `state` holds: the indices `i` of keys `prefix + pattern.format(i) + "..."`."""
    depth = 0
    while any(key.startswith(prefix + pattern.format(depth) + ".") for key in state):
        depth += 1
    return depth
