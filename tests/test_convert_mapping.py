"""Converters against a mapping written here, independently of `keras_bat.convert`: every official
parameter name (as the official code's files name them) -> the Keras variable it fills and how its
layout changes. The official tensors are replaced by random ones, so that a transposed square
matrix, two swapped parameters of one shape or a dropped reshape cannot pass."""

import re

import numpy as np
import pytest
from helpers import load_parity, parity_path, to_numpy

from keras_bat.convert import load_official_head_weights, save_official_weights
from keras_bat.models.bat import load_eat_weights, load_official_pretrainer_weights, load_official_weights
from keras_bat.models.beats import load_beats_weights
from keras_bat.heads import CGP, ASRHead, Head2Toe, LayerMixedLinear, LinearHead, ProtoBin, VQTHead
from keras_bat.models import BATBackbone, BATPretrainer

same = None  # the official array as it is


def linear(w):
    """torch.nn.Linear keeps (out, in); a Keras kernel is (in, out)."""
    return w.T


def patch_conv(w):
    """A (dim, 1, p, p) convolution over one channel is a (p * p, dim) projection of flattened patches."""
    return w.reshape(w.shape[0], -1).T


def first_row(w):
    """Official position tables carry a batch axis of 1."""
    return w[0]


# (official name pattern, Keras variable path template, layout change), for the ViT blocks of BAT,
# EAT, SSLAM and BAT's decoder.
VIT_BLOCKS = [
    (r"blocks\.(\d+)\.norm([12])\.weight", r"blocks_\1/norm\2/gamma", same),
    (r"blocks\.(\d+)\.norm([12])\.bias", r"blocks_\1/norm\2/beta", same),
    (r"blocks\.(\d+)\.attn\.(qkv|gate|proj)\.weight", r"blocks_\1/attn/\2/kernel", linear),
    (r"blocks\.(\d+)\.attn\.(qkv|gate|proj)\.bias", r"blocks_\1/attn/\2/bias", same),
    (r"blocks\.(\d+)\.mlp\.(fc[12])\.weight", r"blocks_\1/\2/kernel", linear),
    (r"blocks\.(\d+)\.mlp\.(fc[12])\.bias", r"blocks_\1/\2/bias", same),
]
BAT = [
    (r"patch_embed\.proj\.weight", "patch_embed/proj/kernel", patch_conv),
    (r"patch_embed\.proj\.bias", "patch_embed/proj/bias", same),
    (r"cls_token", "chunk_tokens/cls_token", same),
    (r"pos_embed", "chunk_tokens/pos_embed", first_row),
    (r"pre_norm\.weight", "pre_norm/gamma", same),
    (r"pre_norm\.bias", "pre_norm/beta", same),
] + VIT_BLOCKS
IMAGE = r"modality_encoders\.IMAGE\."
EAT = [
    (IMAGE + r"local_encoder\.proj\.weight", "patch_embed/proj/kernel", patch_conv),
    (IMAGE + r"local_encoder\.proj\.bias", "patch_embed/proj/bias", same),
    (IMAGE + r"extra_tokens", "chunk_tokens/cls_token", same),
    (IMAGE + r"fixed_positional_encoder\.positions", "chunk_tokens/pos_embed", first_row),
    (IMAGE + r"context_encoder\.norm\.weight", "pre_norm/gamma", same),
    (IMAGE + r"context_encoder\.norm\.bias", "pre_norm/beta", same),
] + VIT_BLOCKS
DECODER = [
    (r"mask_token", "mask_token", same),
    (r"pos_embed", "pos_embed", first_row),
    (r"out_proj\.weight", "out_proj/kernel", linear),
    (r"out_proj\.bias", "out_proj/bias", same),
] + VIT_BLOCKS
LAYER = r"encoder\.layers\.(\d+)\."
BEATS = [
    (r"patch_embedding\.weight", "patch_embed/proj/kernel", patch_conv),
    (r"layer_norm\.weight", "layer_norm/gamma", same),
    (r"layer_norm\.bias", "layer_norm/beta", same),
    (r"post_extract_proj\.weight", "post_extract_proj/kernel", linear),
    (r"post_extract_proj\.bias", "post_extract_proj/bias", same),
    (r"encoder\.pos_conv\.0\.weight_g", "pos_conv/weight_g", same),
    (r"encoder\.pos_conv\.0\.weight_v", "pos_conv/weight_v", same),
    (r"encoder\.pos_conv\.0\.bias", "pos_conv/bias", same),
    (r"encoder\.layer_norm\.weight", "encoder_layer_norm/gamma", same),
    (r"encoder\.layer_norm\.bias", "encoder_layer_norm/beta", same),
    (r"encoder\.layers\.0\.self_attn\.relative_attention_bias\.weight", "relative_attention_bias/table", same),
    (LAYER + r"self_attn\.(q_proj|k_proj|v_proj|out_proj|grep_linear)\.weight", r"blocks_\1/self_attn/\2/kernel",
     linear),
    (LAYER + r"self_attn\.(q_proj|k_proj|v_proj|out_proj|grep_linear)\.bias", r"blocks_\1/self_attn/\2/bias", same),
    (LAYER + r"self_attn\.grep_a", r"blocks_\1/self_attn/grep_a", same),
    (LAYER + r"(self_attn_layer_norm|final_layer_norm)\.weight", r"blocks_\1/\2/gamma", same),
    (LAYER + r"(self_attn_layer_norm|final_layer_norm)\.bias", r"blocks_\1/\2/beta", same),
    (LAYER + r"(fc[12])\.weight", r"blocks_\1/\2/kernel", linear),
    (LAYER + r"(fc[12])\.bias", r"blocks_\1/\2/bias", same),
]


def random_like(official, seed):
    """The official names and shapes, with random values."""
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=np.shape(value)).astype("float32") for name, value in official.items()}


def expected_values(state, rules, prefix=""):
    """`Keras path -> expected value` of every official tensor a rule maps."""
    expected = {}
    for name, value in state.items():
        if not name.startswith(prefix):
            continue
        for pattern, path, change in rules:
            match = re.fullmatch(pattern, name[len(prefix):])
            if match:
                expected[match.expand(path)] = value if change is None else change(value)
                break
    return expected


def assert_variables_hold(model, expected, what):
    variables = {v.path.split("/", 1)[1] if v.path.startswith(model.name + "/") else v.path: v
                 for v in model.weights}
    assert sorted(variables) == sorted(expected), f"{what}: variables and official parameters differ"
    for path, value in expected.items():
        np.testing.assert_array_equal(to_numpy(variables[path]), value, err_msg=f"{what}: {path}")


def test_bat_encoder_every_parameter_lands_where_the_official_code_keeps_it(tiny_config, tmp_path):
    state = random_like(load_parity("encoder_weights.safetensors"), seed=41)
    backbone = BATBackbone(**tiny_config)
    load_official_weights(backbone, state)
    expected = expected_values(state, BAT)
    assert len(expected) == len(state)  # every official parameter is mapped
    assert_variables_hold(backbone, expected, "BAT encoder")
    save_official_weights(backbone, tmp_path / "saved.safetensors")  # and back, under the official names
    from safetensors.numpy import load_file

    saved = load_file(str(tmp_path / "saved.safetensors"))
    assert sorted(saved) == sorted(state)
    for name in state:
        np.testing.assert_array_equal(saved[name], state[name], err_msg=name)


def test_pretrainer_student_decoder_and_teacher_land_where_the_official_code_keeps_them():
    student = random_like(load_parity("ssl_student_weights.safetensors"), seed=42)
    teacher = random_like(load_parity("ssl_teacher_weights.safetensors"), seed=43)
    state = {**student, **{"ema_" + name: value for name, value in teacher.items()}}
    pretrainer = BATPretrainer(encoder={"dim": 64, "depth": 3, "num_heads": 4}, decoder_depth=2, decoder_heads=4,
                               time_frames=1024, num_views=2)
    load_official_pretrainer_weights(pretrainer, state)
    for part, prefix, rules in ((pretrainer.student, "encoder.", BAT), (pretrainer.decoder, "decoder.", DECODER),
                                (pretrainer.teacher, "ema_encoder.", BAT)):
        expected = expected_values(state, rules, prefix)
        assert len(expected) == sum(name.startswith(prefix) for name in state), prefix
        assert_variables_hold(part, expected, prefix)


def test_eat_every_parameter_lands_where_the_official_code_keeps_it():
    import torch

    checkpoint = torch.load(parity_path("eat_checkpoint.pt", "peer"), map_location="cpu", weights_only=False)
    official = {name: value.numpy() for name, value in checkpoint["model"].items()}
    state = random_like(official, seed=44)
    backbone = BATBackbone(dim=64, depth=3, num_heads=4, use_gate=False)
    load_eat_weights(backbone, {"model": state})
    assert_variables_hold(backbone, expected_values(state, EAT), "EAT encoder")


def test_beats_every_parameter_lands_where_the_official_code_keeps_it():
    import torch

    from test_models_beats_backbone import tiny_beats

    checkpoint = torch.load(parity_path("beats_checkpoint.pt", "peer"), map_location="cpu", weights_only=False)
    official = {name: value.numpy() for name, value in checkpoint["model"].items()}
    state = random_like(official, seed=45)
    table = "encoder.layers.{}.self_attn.relative_attention_bias.weight"
    for i in range(1, 3):  # BEATs repeats layer 0's relative-bias table under every layer
        if table.format(i) in state:
            state[table.format(i)] = state[table.format(0)]
    backbone = tiny_beats()
    load_beats_weights(backbone, {"model": state, "cfg": checkpoint["cfg"]})
    assert_variables_hold(backbone, expected_values(state, BEATS), "BEATs encoder")


# Head parameters: official name -> (the head's attribute path to the variable, layout change).
HEAD_RULES = {
    "fc.weight": ("fc.kernel", linear), "fc.bias": ("fc.bias", same),
    "head.weight": ("fc.kernel", linear), "head.bias": ("fc.bias", same),
    "ln.weight": ("norm.gamma", same), "ln.bias": ("norm.beta", same),
    "block_attention": ("layer_logits", same),
    "prototype_vectors": ("prototypes", lambda w: w[:, :, 0, 0]),  # 1 x 1 convolution filters
    "vqt": ("query_tokens", same),
    "upsample.weight": ("upsample_kernel", same),  # ConvTranspose1d (in, out, k)
    "upsample.bias": ("upsample_bias", same),
}


def head_rules(head):
    rules = dict(HEAD_RULES)
    if isinstance(head, ASRHead):
        for layer in range(head.lstm_layers):
            for suffix, direction in (("", "forward_layer"), ("_reverse", "backward_layer")):
                cell, tag = f"lstms.{layer}.{direction}.cell", f"l{layer}{suffix}"
                # torch.nn.LSTM's gates (i, f, g, o) are in Keras' order; its two biases are added.
                rules[f"lstm.weight_ih_{tag}"] = (f"{cell}.kernel", linear)
                rules[f"lstm.weight_hh_{tag}"] = (f"{cell}.recurrent_kernel", linear)
                rules[f"lstm.bias_ih_{tag}"] = (f"{cell}.bias", f"lstm.bias_hh_{tag}")
    return rules


def attribute(head, path):
    """The object at a dotted attribute path of `head` (numbers index lists)."""
    for part in path.split("."):
        head = head[int(part)] if part.isdigit() else getattr(head, part)
    return head


HEADS = {
    "linear_cls_norm": lambda: LinearHead(5, "cls", use_norm=True),
    "linear_cgp_frame": lambda: LayerMixedLinear(5, "frame"),
    "cgp_cls": lambda: CGP(5, 32, "cls"),
    "protobin": lambda: ProtoBin(5, 32, "max"),
    "h2t_cls_layerwise": lambda: Head2Toe(5, "cls", layer_wise_lasso=True, dim=64),
    "vqt": lambda: VQTHead(5, depth=3, dim=64, num_query_tokens=2),
    "asr": lambda: ASRHead(29),
}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_parameters_land_where_the_official_code_keeps_them(name):
    fixture = "asr_head_weights.safetensors" if name == "asr" else "heads_weights.safetensors"
    official = {k[len(name) + 1:]: v for k, v in load_parity(fixture).items() if k.startswith(name + "/")}
    state = random_like(official, seed=46)
    if "group_scale" in state:  # a buffer that must equal the configuration: kept
        state["group_scale"] = official["group_scale"]
    head = load_official_head_weights(HEADS[name](), state)
    rules = head_rules(head)
    checked = set()
    for official_name, value in state.items():
        if official_name == "group_scale" or official_name.startswith("lstm.bias_hh"):
            continue
        path, change = rules[official_name]
        if isinstance(change, str):  # a second official tensor added to this one
            value, change = value + state[change], same
        expected = value if change is None else change(value)
        variable = attribute(head, path)
        np.testing.assert_array_equal(to_numpy(variable), expected, err_msg=f"{name}: {official_name}")
        checked.add(id(variable))
    assert checked == {id(v) for v in head.weights}, f"{name}: a variable no official parameter fills"
