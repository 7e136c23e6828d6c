"""EAT and SSLAM checkpoints (fairseq / data2vec 2.0 layout) -> BATBackbone(use_gate=False).

EAT and SSLAM are BAT's encoder without the attention gate. Their
checkpoints hold `{"model": {...}}` with the patch embedding, class token,
position table and pre-norm under `modality_encoders.IMAGE.*` and the blocks
under BAT's own names (`blocks.{i}.attn.qkv.weight`, ...), beside keys of
the pretraining (decoder, EMA state) that the encoder does not use.
"""

from keras_bat.models.bat.bat_convert import backbone_parameters, block_settings, table_time_patches
from keras_bat.convert.checkpoints import read_state_dict
from keras_bat.convert.mapping import assign_parameters, choose_prefix, find_prefix
from keras_bat.errors import UsageError

_IMAGE = "modality_encoders.IMAGE."
# BAT name -> fairseq name, for the parameters outside the blocks.
EAT_NAMES = {
    "cls_token": _IMAGE + "extra_tokens",
    "patch_embed.proj.weight": _IMAGE + "local_encoder.proj.weight",
    "patch_embed.proj.bias": _IMAGE + "local_encoder.proj.bias",
    "pos_embed": _IMAGE + "fixed_positional_encoder.positions",
    "pre_norm.weight": _IMAGE + "context_encoder.norm.weight",
    "pre_norm.bias": _IMAGE + "context_encoder.norm.bias",
}


def eat_parameters(backbone):
    """Maps every EAT / SSLAM parameter name to its `BATBackbone` variable."""
    if backbone.use_gate:
        raise UsageError("EAT and SSLAM have no attention gate: load them into BATBackbone(use_gate=False), "
                         "e.g. BATBackbone.from_preset('eat_base').")
    return {EAT_NAMES.get(name, name): param for name, param in backbone_parameters(backbone).items()}


def load_eat_weights(backbone, source, prefix=None):
    """Loads an EAT or SSLAM encoder checkpoint into a `BATBackbone(use_gate=False)`.

    Keys the encoder does not use (decoder, EMA state, ...) are ignored;
    missing or mis-shaped ones are listed in one error and nothing is
    assigned.

    Args:
        backbone: a `keras_bat.models.BATBackbone` built with `use_gate=False`.
        source: a fairseq checkpoint (`.pt` holding `{"model": {...}}`), a
            `.safetensors` file, a folder with `model.safetensors`, or a dict.
        prefix: str or `None`, the prefix of the encoder's keys; `None` tries
            the usual ones.

    Returns:
        The backbone, for chaining.
    """
    state = read_state_dict(source)
    expected = eat_parameters(backbone)
    if prefix is None:
        prefix = choose_prefix(state, expected)
    assign_parameters(expected, state, prefix, True, "EAT / SSLAM encoder (BATBackbone with use_gate=False)")
    return backbone


def eat_checkpoint_config(state):
    """`(constructor arguments, prefix)` of an EAT / SSLAM encoder in a fairseq state dict, read
    off its weights (SSLAM's layout is EAT's: both load as EAT), or `None` when it holds none."""
    prefix = find_prefix(state, EAT_NAMES["patch_embed.proj.weight"])
    if prefix is None or prefix + "blocks.0.attn.qkv.weight" not in state:
        return None
    config = {**block_settings(state, prefix), "use_gate": False, "frontend": "eat"}
    time_patches = table_time_patches(state.get(prefix + EAT_NAMES["pos_embed"]))
    if time_patches:
        config["chunk_time_patches"] = time_patches
    return config, prefix
