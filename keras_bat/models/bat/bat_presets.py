"""The BAT family's presets (BAT, and EAT / SSLAM: BAT's encoder without the gate) and the
statistics EAT / SSLAM's Kaldi-fbank frontend normalises with.

Presets are architectures (plain dicts of constructor arguments); the family's
registration (`keras_bat/models/bat/__init__.py`) adds each encoder's fixed arguments.
"""

from keras_bat.layers.frontend import EAT_AUDIOSET_MEAN, EAT_AUDIOSET_STD

BAT_PRESETS = {
    "bat_small": {
        "description": "BAT ViT-S/16: 384 wide, 12 blocks, 6 heads (23.2M trainable parameters with the gates).",
        "config": {"dim": 384, "depth": 12, "num_heads": 6},
    },
    "bat_base": {
        "description": "BAT ViT-B/16: 768 wide, 12 blocks, 12 heads (92.3M trainable "
                       "parameters with the gates); the paper's released model.",
        "config": {"dim": 768, "depth": 12, "num_heads": 12},
    },
    "bat_base_as2m": {
        "description": "BAT ViT-B/16 pretrained on AudioSet-2M: the authors' release on the Hugging Face Hub "
                       "(downloaded into the Hugging Face cache on first use).",
        "config": {"dim": 768, "depth": 12, "num_heads": 12},
        "uri": "hf://lrauch/BAT-vit-b16-pretrainedAS2M",
    },
    "bat_large": {
        "description": "BAT ViT-L/16: 1024 wide, 24 blocks, 16 heads (327.8M trainable parameters with the gates).",
        "config": {"dim": 1024, "depth": 24, "num_heads": 16},
    },
}

EAT_PRESETS = {
    "eat_base": {
        "description": "EAT ViT-B/16 (no attention gate), Kaldi-fbank frontend with EAT's statistics; load "
                       "an EAT checkpoint with keras_bat.models.bat.load_eat_weights.",
        "config": {"dim": 768, "depth": 12, "num_heads": 12},
    },
}

SSLAM_PRESETS = {
    "sslam_base": {
        "description": "SSLAM ViT-B/16 (EAT's architecture and frontend); load an SSLAM checkpoint with "
                       "keras_bat.models.bat.load_eat_weights.",
        "config": {"dim": 768, "depth": 12, "num_heads": 12},
    },
}

# (mean, std) of EAT's and SSLAM's Kaldi fbank per dataset, as the official code normalises them.
EAT_STATISTICS = {
    "audioset": (EAT_AUDIOSET_MEAN, EAT_AUDIOSET_STD), "speech_commands": (-9.03415996, 4.57304508),
    "esc50": (-6.85408831, 5.39770323), "librispeech": (-7.32925959, 4.0610049),
    "birdset": (-8.5504812, 4.04533479), "dcase": (-10.68592022, 2.06164972),
}
