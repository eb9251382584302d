"""Vermouth's variant cards: plain data, torch-free, so `harness list backbones` and planning stay cheap.

`extra` holds the defaults of every option `backbones.vermouth.options.VermouthOptions` knows (plus
`params` and `feature_kinds`, which `harness list backbones` shows); a constructor keyword (or a config
`options` field) overrides them. `arch` names the component
configs in `backbones.vermouth.configs` that `weights: random` builds.
"""

from __future__ import annotations

from typing import Any

from harness.api import VariantCard

LEVELS = ("L0", "L1", "L2", "L3")
# The maintained copy of the SD 1.5 release (runwayml's repo left the hub in 2024; its id is an alias, see
# harness.data.weights.HUB_ALIASES), pinned to a commit so the weights never change under a job key.
SD15_WEIGHTS = "stable-diffusion-v1-5/stable-diffusion-v1-5@451f4fe16113bff5a5d2269ed5ad43b0592e9a14"

# What both variants share: the method's FSC feature setting (t=200, DDPM noise, mid+up levels) with the
# leak-free empty prompt, and BLIP's caption settings as the official code runs them (§3 of the method report).
_FEATURES: dict[str, Any] = {
    "t": 200,
    "noise": "ddpm",
    "prompt": "empty",  # "empty" | "fixed:<text>" | "blip"
    "stages": list(LEVELS),
    "expert": "none",  # "none" | "resnet18" | "dinov2"
    "cross_attention": False,
    "cross_attention_l3": False,
    "global_pool": "levels_gap_concat",
    "caption_prefix": "a picture of ",
    "caption_max_length": 10,  # counts the prefix tokens, as BLIP's decoder does
    "caption_min_length": 5,
    "early_exit": True,
}

# The method's setting per task (§7 of the method report, as the official code runs each task), the base of each
# job's options: `harness run --backbone vermouth --suite all` measures what the paper measures. A suite entry's
# `backbone_options` or `--opt` overrides them; job keys and the feature store keep the settings apart.
TASK_PRESETS: dict[str, dict[str, Any]] = {
    # FSC: 256 px (Resize + CenterCrop), t=200 with DDPM noise; the leak-free empty prompt (the official train
    # script prompts with the ground-truth class name), no cross-attention maps (the released checkpoint's setting).
    "fsc": {"resolution": 256, "t": 200, "noise": "ddpm", "prompt": "empty", "cross_attention": False},
    # SBIR: 256 px, each image's BLIP caption as the prompt, cross-attention maps, clean latents at t=200.
    "sbir": {"resolution": 256, "t": 200, "noise": "none", "prompt": "blip", "cross_attention": True},
    # OVSS: 512 px crops, t=50 with DDPM noise, cross-attention maps, the empty prompt (the official whole-image
    # inference prompts with the ground-truth classes present; its slide inference uses "").
    "ovss": {"resolution": 512, "t": 50, "noise": "ddpm", "prompt": "empty", "cross_attention": True},
}


def scaled_presets(resolution: int) -> dict[str, dict[str, Any]]:
    """The method's presets with the variant's own resolution (the tiny CPU stand-in stays at its 64 px)."""
    return {task: {**preset, "resolution": resolution} for task, preset in TASK_PRESETS.items()}


VERMOUTH: dict[str, VariantCard] = {
    "sd15": VariantCard(
        name="sd15", arch="sd15", weights=SD15_WEIGHTS,
        description="Stable Diffusion v1.5 (any diffusers-layout folder, SD 2.x too), 512 px, t=200, "
                    "levels mid/up0/up1/up2+up3 = 1280/1280/1280/960 channels",
        extra={
            **_FEATURES,
            "params": 1_066_235_307,  # UNet 859.5M + VAE 83.7M + CLIP-L text 123.1M (the frozen SD parts)
            "feature_kinds": ["global", "dense"],
            "task_presets": TASK_PRESETS,
            "resolution": 512,
            "default_captioner": "Salesforce/blip-image-captioning-base",
            "experts": {
                "resnet18": {"arch": "resnet18", "weights": "timm/resnet18.tv_in1k"},
                "dinov2": {"arch": "vit_base_patch14_dinov2", "weights": "timm/vit_base_patch14_dinov2.lvd142m",
                           "input_size": 224},
            },
            "uhead": {"widths": [1024, 768, 512, 256], "groups": 32, "heads": 8, "embed_dim": 768, "pool_size": 4},
            "dense_head": {"widths": [2048, 1024, 512, 256], "fpn_channels": 256, "groups": 32, "embed_dim": 768,
                           "dropout": 0.1},
        },
    ),
    "tiny": VariantCard(
        name="tiny", arch="tiny", weights="random",
        description="the same components (UNet blocks as SD, VAE /8, CLIP text, BLIP) at toy widths, "
                    "random init, 64 px: a fast CPU stand-in for tests and the mini suite",
        extra={
            **_FEATURES,
            "params": 1_755_355,
            "feature_kinds": ["global", "dense"],
            "task_presets": scaled_presets(64),
            "resolution": 64,
            "default_captioner": "random",
            "experts": {
                "resnet18": {"arch": "resnet10t", "weights": "random"},
                "dinov2": {"arch": "vit_base_patch14_dinov2", "weights": "random", "input_size": 56,
                           "kwargs": {"embed_dim": 32, "num_heads": 2, "img_size": 56}},
            },
            "uhead": {"widths": [64, 48, 32, 16], "groups": 8, "heads": 4, "embed_dim": 32, "pool_size": 4},
            "dense_head": {"widths": [64, 32, 16, 8], "fpn_channels": 16, "groups": 8, "embed_dim": 32,
                           "dropout": 0.1},
        },
    ),
}
