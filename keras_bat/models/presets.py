"""Architecture presets of the paper (plain dicts of constructor arguments).

No weights are downloaded: a name builds a randomly initialised model (and
says so); `weights_loader` names the `keras_bat.convert` function that loads
the official checkpoint. `from_preset` also takes a preset directory.
"""

BACKBONE_PRESETS = {
    "bat_small": {
        "description": "BAT ViT-S/16: 384 wide, 12 blocks, 6 heads (23.2M trainable parameters with the gates).",
        "weights_loader": "load_official_weights",
        "config": {"dim": 384, "depth": 12, "num_heads": 6},
    },
    "bat_base": {
        "description": "BAT ViT-B/16: 768 wide, 12 blocks, 12 heads (92.3M trainable "
                       "parameters with the gates); the paper's released model.",
        "weights_loader": "load_official_weights",
        "config": {"dim": 768, "depth": 12, "num_heads": 12},
    },
    "eat_base": {
        "description": "EAT ViT-B/16 (no attention gate), Kaldi-fbank frontend with EAT's statistics; load "
                       "an EAT checkpoint with keras_bat.convert.load_eat_weights.",
        "weights_loader": "load_eat_weights",
        "config": {"dim": 768, "depth": 12, "num_heads": 12, "use_gate": False, "frontend": "eat"},
    },
    "sslam_base": {
        "description": "SSLAM ViT-B/16 (EAT's architecture and frontend); load an SSLAM checkpoint with "
                       "keras_bat.convert.load_eat_weights.",
        "weights_loader": "load_eat_weights",
        "config": {"dim": 768, "depth": 12, "num_heads": 12, "use_gate": False, "frontend": "sslam"},
    },
    "bat_large": {
        "description": "BAT ViT-L/16: 1024 wide, 24 blocks, 16 heads (327.8M trainable parameters with the gates).",
        "weights_loader": "load_official_weights",
        "config": {"dim": 1024, "depth": 24, "num_heads": 16},
    },
}

BEATS_PRESETS = {
    "beats_iter3": {
        "description": "BEATs iter3 (AS2M): 768 wide, 12 deep-norm blocks, 12 heads, relative positions, "
                       "Kaldi-fbank frontend with BEATs' statistics; load the official checkpoint with "
                       "keras_bat.convert.load_beats_weights.",
        "weights_loader": "load_beats_weights",
        "config": {"dim": 768, "depth": 12, "num_heads": 12, "ffn_dim": 3072, "embed_dim": 512},
    },
}
