"""Component configs as data (torch-free): what `weights: random` builds for each card `arch`.

`sd15` holds the published Stable Diffusion v1.5 values (unet/vae/text_encoder config.json of the
runwayml release; BLIP is transformers' BlipConfig defaults = BLIP-base, the captioner the method used),
so a random-weight SD-1.5-shaped model can be timed without a download (`realsize_check`). `tiny` keeps
every structural choice (UNet block types, VAE /8, CLIP text, BLIP) at toy widths. Tokenizers cannot be
published vocabularies offline, so both use a byte-level character vocabulary (a real CLIPTokenizer with
no merges) and a small BERT word/character vocabulary for BLIP with BLIP's special-token ids.
"""

from __future__ import annotations

from typing import Any

_SD_DOWN = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
_SD_UP = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]

SCHEDULER: dict[str, Any] = {  # SD's training schedule, as a DDPMScheduler (the method's `ddpm_schedule`)
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "clip_sample": False, "steps_offset": 1,
}

SD15: dict[str, Any] = {
    "unet": {
        "sample_size": 64, "in_channels": 4, "out_channels": 4, "center_input_sample": False,
        "flip_sin_to_cos": True, "freq_shift": 0, "down_block_types": _SD_DOWN, "up_block_types": _SD_UP,
        "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "downsample_padding": 1,
        "mid_block_scale_factor": 1, "act_fn": "silu", "norm_num_groups": 32, "norm_eps": 1e-5,
        "cross_attention_dim": 768, "attention_head_dim": 8,
    },
    "vae": {
        "in_channels": 3, "out_channels": 3, "latent_channels": 4, "sample_size": 512,
        "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "act_fn": "silu",
        "norm_num_groups": 32, "scaling_factor": 0.18215,
    },
    "text_encoder": {  # CLIP ViT-L/14 text tower
        "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
        "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
        "projection_dim": 768, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
    },
    "tokenizer": {"model_max_length": 77},
    "scheduler": SCHEDULER,
    "blip": {"vision_config": {}, "text_config": {}},  # transformers defaults: BLIP-base, ViT-B/16 at 384 px
    "blip_image_size": 384,
    "blip_vocab": {"size": 30524, "specials": {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102,
                                                "[MASK]": 103, "[DEC]": 30522}},
}

TINY: dict[str, Any] = {
    "unet": {
        "sample_size": 8, "in_channels": 4, "out_channels": 4, "down_block_types": _SD_DOWN,
        "up_block_types": _SD_UP, "block_out_channels": [16, 32, 64, 64], "layers_per_block": 1,
        "act_fn": "silu", "norm_num_groups": 8, "cross_attention_dim": 32, "attention_head_dim": 4,
    },
    "vae": {  # four blocks: the same /8 downsampling as SD's VAE
        "in_channels": 3, "out_channels": 3, "latent_channels": 4, "sample_size": 64,
        "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [16, 16, 32, 32], "layers_per_block": 1, "act_fn": "silu",
        "norm_num_groups": 8,
        # SD picked 0.18215 to give its latents unit variance; the same rule for this random VAE (latent std
        # 0.27 on the mini images at seed 0) keeps the signal-to-noise ratio at t what it is for SD.
        "scaling_factor": 3.7,
    },
    "text_encoder": {
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 32,
        "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1,  # vocab_size: set from the tokenizer
    },
    "tokenizer": {"model_max_length": 77},
    "scheduler": SCHEDULER,
    "blip": {
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                          "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                        "num_attention_heads": 2, "max_position_embeddings": 32, "encoder_hidden_size": 32},
        "projection_dim": 32,
    },
    "blip_image_size": 32,
    "blip_vocab": {"size": 128, "specials": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4,
                                              "[DEC]": 5}},
}

COMPONENT_CONFIGS: dict[str, dict[str, Any]] = {"sd15": SD15, "tiny": TINY}

# Whole words first (so the caption prefix "a picture of" is 3 tokens, as with BERT's vocabulary), then
# characters and their WordPiece continuations.
BLIP_WORDS = ["a", "picture", "of", "photo", "the", "an", "in", "on", "with", "and", "is", "at"]
BLIP_CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,'!?-")
