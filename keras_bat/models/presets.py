"""Architecture presets of the paper (plain dicts of constructor arguments).

No weights are downloaded: build from a name for a randomly initialised
model, or point `from_preset` at a directory holding a converted checkpoint.
"""

BACKBONE_PRESETS = {
    "bat_small": {
        "description": "BAT ViT-S/16: 384 wide, 12 blocks, 6 heads (23.2M trainable parameters with the gates).",
        "config": {"dim": 384, "depth": 12, "num_heads": 6},
    },
    "bat_base": {
        "description": "BAT ViT-B/16: 768 wide, 12 blocks, 12 heads (92.3M trainable "
                       "parameters with the gates); the paper's released model.",
        "config": {"dim": 768, "depth": 12, "num_heads": 12},
    },
    "bat_large": {
        "description": "BAT ViT-L/16: 1024 wide, 24 blocks, 16 heads (327.8M trainable parameters with the gates).",
        "config": {"dim": 1024, "depth": 24, "num_heads": 16},
    },
}
