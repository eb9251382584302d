"""Variant cards of the built-in backbones: plain data, torch-free, so listing and planning stay cheap.

Preprocessing is not re-typed here: it comes from timm's own pretrained config (and the weights'
config.json when present). A card's `extra["pretrained_cfg_overlay"]` may override parts of it.
"""

from __future__ import annotations

from harness.api import VariantCard

_RESNET_EXTRA = {"feature_kinds": ("global", "dense"), "embed_dim": 2048,
                 "dense_levels": ("layer1", "layer2", "layer3", "layer4")}

RESNET: dict[str, VariantCard] = {
    "resnet50": VariantCard(
        name="resnet50", arch="resnet50", weights="timm/resnet50.a1_in1k",
        description="ResNet-50, timm RSB A1 recipe on ImageNet-1k (2048-d global, 224 px)",
        extra={**_RESNET_EXTRA, "resolution": 224, "params": 23_508_032},
    ),
    "resnet101": VariantCard(
        name="resnet101", arch="resnet101", weights="timm/resnet101.a1h_in1k",
        description="ResNet-101, timm RSB A1h recipe on ImageNet-1k (2048-d global, 224 px)",
        extra={**_RESNET_EXTRA, "resolution": 224, "params": 42_500_160},
    ),
    "tiny": VariantCard(
        name="tiny", arch="resnet10t", weights="random",
        description="ResNet-10-T, random init at 64 px: a fast CPU stand-in for tests and the mini suite",
        # 64 px instead of timm's 176 keeps the CPU mini suite fast (it runs in fp64, where convolutions are slow).
        extra={**_RESNET_EXTRA, "embed_dim": 512, "resolution": 64, "params": 4_922_488,
               "pretrained_cfg_overlay": {"input_size": (3, 64, 64)}},
    ),
}

# Shared by the CLIP and DINO cards. `extra` keys: `resolution` (default square input side, px),
# `params` (parameters of the whole built model, checked by tests/backbones on the meta device),
# `feature_kinds` (what the variant offers; "text" = `text_features` / `prompt_embeddings`),
# `embed_dim` (width of `global`), `dense_levels` (names of the `dense` maps, shallow to deep).

CLIP: dict[str, VariantCard] = {
    "vit-b-16": VariantCard(
        name="vit-b-16", arch="ViT-B-16", weights="timm/vit_base_patch16_clip_224.openai",
        description="CLIP ViT-B/16, OpenAI weights in open_clip format (512-d global, 224 px, QuickGELU)",
        extra={"pretrained_tag": "openai", "resolution": 224, "params": 149_620_737, "params_visual": 86_192_640,
               "embed_dim": 512, "feature_kinds": ("global", "dense", "text"),
               "dense_levels": ("block3", "block6", "block9", "block12")},
    ),
    "vit-l-14": VariantCard(
        name="vit-l-14", arch="ViT-L-14", weights="timm/vit_large_patch14_clip_224.openai",
        description="CLIP ViT-L/14, OpenAI weights in open_clip format (768-d global, 224 px, QuickGELU)",
        extra={"pretrained_tag": "openai", "resolution": 224, "params": 427_616_513, "params_visual": 303_966_208,
               "embed_dim": 768, "feature_kinds": ("global", "dense", "text"),
               "dense_levels": ("block6", "block12", "block18", "block24")},
    ),
    "rn50": VariantCard(
        name="rn50", arch="RN50", weights="timm/resnet50_clip.openai",
        description="CLIP ResNet-50 (attention pool), OpenAI weights in open_clip format (1024-d global, 224 px)",
        extra={"pretrained_tag": "openai", "resolution": 224, "params": 102_007_137, "params_visual": 38_316_896,
               "embed_dim": 1024, "feature_kinds": ("global", "dense", "text"),
               "dense_levels": ("layer1", "layer2", "layer3", "layer4")},
    ),
    "tiny": VariantCard(
        name="tiny", arch="tiny-vit", weights="random",
        description="a 2-block CLIP ViT (width 64, patch 16, 64 px) + 2-block text tower, random init: "
                    "a fast CPU stand-in for tests and the mini suite",
        # An open_clip model config (the format of open_clip's model_configs/*.json), built with
        # open_clip.model.CLIP(**model_cfg). vocab_size is CLIP's BPE vocabulary, so the stock tokenizer fits.
        extra={"model_cfg": {"embed_dim": 64,
                             "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32,
                                            "patch_size": 16},
                             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                                          "layers": 2}},
               "resolution": 64, "params": 3_425_857, "params_visual": 154_624, "embed_dim": 64,
               "feature_kinds": ("global", "dense", "text"), "dense_levels": ("block1", "block2")},
    ),
}

DINO: dict[str, VariantCard] = {
    "vit-b-16": VariantCard(
        name="vit-b-16", arch="vit_base_patch16_224.dino", weights="timm/vit_base_patch16_224.dino",
        description="DINO (v1) ViT-B/16 self-supervised on ImageNet-1k (768-d class token, 224 px)",
        extra={"resolution": 224, "params": 85_798_656, "embed_dim": 768, "feature_kinds": ("global", "dense"),
               "dense_levels": ("block3", "block6", "block9", "block12")},
    ),
    "dinov2-s": VariantCard(
        name="dinov2-s", arch="vit_small_patch14_dinov2.lvd142m", weights="timm/vit_small_patch14_dinov2.lvd142m",
        description="DINOv2 ViT-S/14 on LVD-142M (384-d class token, 518 px)",
        extra={"resolution": 518, "params": 22_056_192, "embed_dim": 384, "feature_kinds": ("global", "dense"),
               "dense_levels": ("block3", "block6", "block9", "block12")},
    ),
    "dinov2-b": VariantCard(
        name="dinov2-b", arch="vit_base_patch14_dinov2.lvd142m", weights="timm/vit_base_patch14_dinov2.lvd142m",
        description="DINOv2 ViT-B/14 on LVD-142M (768-d class token, 518 px)",
        extra={"resolution": 518, "params": 86_579_712, "embed_dim": 768, "feature_kinds": ("global", "dense"),
               "dense_levels": ("block3", "block6", "block9", "block12")},
    ),
    "dinov2-l": VariantCard(
        name="dinov2-l", arch="vit_large_patch14_dinov2.lvd142m", weights="timm/vit_large_patch14_dinov2.lvd142m",
        description="DINOv2 ViT-L/14 on LVD-142M (1024-d class token, 518 px)",
        extra={"resolution": 518, "params": 304_367_616, "embed_dim": 1024, "feature_kinds": ("global", "dense"),
               "dense_levels": ("block6", "block12", "block18", "block24")},
    ),
    "dinov2-g": VariantCard(
        name="dinov2-g", arch="vit_giant_patch14_dinov2.lvd142m", weights="timm/vit_giant_patch14_dinov2.lvd142m",
        description="DINOv2 ViT-g/14 on LVD-142M (1536-d class token, 518 px)",
        extra={"resolution": 518, "params": 1_136_479_232, "embed_dim": 1536, "feature_kinds": ("global", "dense"),
               "dense_levels": ("block10", "block20", "block30", "block40")},
    ),
    "tiny": VariantCard(
        name="tiny", arch="vit_base_patch16_224.dino", weights="random",
        description="a 2-block DINO-family ViT (width 64, patch 16, 64 px), random init: a fast CPU stand-in "
                    "for tests and the mini suite",
        # timm builds the DINO ViT-B/16 definition with these constructor overrides (its pretrained cfg, hence
        # mean/std/interpolation/crop, stays DINO's); 64 px keeps the CPU mini suite fast.
        extra={"model_kwargs": {"embed_dim": 64, "depth": 2, "num_heads": 2},
               "pretrained_cfg_overlay": {"input_size": (3, 64, 64)},
               "resolution": 64, "params": 150_464, "embed_dim": 64, "feature_kinds": ("global", "dense"),
               "dense_levels": ("block1", "block2")},
    ),
}
