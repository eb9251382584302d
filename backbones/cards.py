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

# The `synthetic` backbone (`backbones.synthetic`): the real feature shapes of big backbones at negligible
# compute, for memory / throughput load tests of the harness on a CPU. Never in `--backbone all`. `extra` keys:
# `levels` (the dense maps, shallow to deep as the real backbone names them: `channels`, and either `stride`,
# a map of ceil(side / stride) cells as a padded conv net gives, or `patch`, a floor(side / patch) ViT grid),
# `global_levels` (`global` = their global-average-pooled maps concatenated; empty: a projection of the whole
# image's statistics to `embed_dim`), `neck` (the trainable neck's per-level width and output width).
SYNTHETIC_NOTE = "SYNTHETIC (load tests only)"
SYNTHETIC_STATS = 6  # per cell: the mean of each normalised channel and of its square (backbones.synthetic)


def _synthetic(name: str, resolution: int, levels: list[dict], embed_dim: int, global_levels: tuple[str, ...],
               what: str, neck_width: int = 32) -> VariantCard:
    """A synthetic card: a 1×1 projection of the cell statistics (+ bias) per level, and per global head."""
    params = sum(lv["channels"] for lv in levels) * (SYNTHETIC_STATS + 1)
    if not global_levels:
        params += embed_dim * (SYNTHETIC_STATS + 1)
    return VariantCard(
        name=name, arch=f"synthetic-{name}", weights="random",
        description=f"{SYNTHETIC_NOTE}: {what}, at negligible compute",
        extra={"resolution": resolution, "params": params, "embed_dim": embed_dim,
               "feature_kinds": ("global", "dense"), "dense_levels": tuple(lv["name"] for lv in levels),
               "levels": tuple(levels), "global_levels": global_levels,
               "neck": {"width": neck_width, "embed_dim": 256}})


def _sd15_levels() -> list[dict]:
    return [{"name": "L0", "channels": 1280, "stride": 64}, {"name": "L1", "channels": 1280, "stride": 32},
            {"name": "L2", "channels": 1280, "stride": 16}, {"name": "L3", "channels": 960, "stride": 8}]


SYNTHETIC: dict[str, VariantCard] = {
    "sd15-512": _synthetic("sd15-512", 512, _sd15_levels(), 4800, ("L0", "L1", "L2", "L3"),
                           "Vermouth sd15's levels at 512 px (1280×8×8, 1280×16×16, 1280×32×32, 960×64×64; "
                           "4800-d pooled-levels global)"),
    "sd15-256": _synthetic("sd15-256", 256, _sd15_levels(), 4800, ("L0", "L1", "L2", "L3"),
                           "Vermouth sd15's levels at 256 px (1280×4×4 .. 960×32×32; 4800-d global)"),
    "vit-l-14": _synthetic("vit-l-14", 224, [{"name": f"block{k}", "channels": 1024, "patch": 14}
                                             for k in (6, 12, 18, 24)], 768, (),
                           "CLIP ViT-L/14's shapes at 224 px (4 × 1024×16×16 blocks; 768-d global)"),
    "resnet50": _synthetic("resnet50", 224, [{"name": f"layer{k}", "channels": c, "stride": s} for k, c, s in
                                             ((1, 256, 4), (2, 512, 8), (3, 1024, 16), (4, 2048, 32))],
                           2048, ("layer4",),
                           "ResNet-50's shapes at 224 px (layer1..4 = 256×56×56 .. 2048×7×7; 2048-d global)"),
    "tiny": _synthetic("tiny", 32, [{"name": "L0", "channels": 16, "stride": 8},
                                    {"name": "L1", "channels": 8, "stride": 4}], 24, ("L0", "L1"),
                       "two small levels at 32 px (16×4×4, 8×8×8; 24-d global) for fast unit tests", neck_width=8),
}
