"""BEATs' presets and the statistics its Kaldi-fbank frontend normalises with."""

BEATS_PRESETS = {
    "beats_iter3": {
        "description": "BEATs iter3 (AS2M): 768 wide, 12 deep-norm blocks, 12 heads, relative positions, "
                       "Kaldi-fbank frontend with BEATs' statistics; load the official checkpoint with "
                       "keras_bat.models.beats.load_beats_weights.",
        "config": {"dim": 768, "depth": 12, "num_heads": 12, "ffn_dim": 3072, "embed_dim": 512},
    },
}

# (mean, std) of BEATs' Kaldi fbank per dataset, as the official code normalises them.
BEATS_STATISTICS = {
    "audioset": (15.41663, 6.55582), "speech_commands": (11.42262215, 5.65233194),
    "esc50": (11.72161352, 10.60385933), "librispeech": (13.30096596, 4.97074609),
    "birdset": (11.82694931, 5.40055698), "dcase": (10.01597327, 3.07065857),
}
