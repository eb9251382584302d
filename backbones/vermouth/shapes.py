"""Vermouth's per-image feature shapes from its card and options alone, for the planner's cost model.

Why arithmetic: reading the shapes off a built model would load the SD pipeline (a gigabyte) just to learn
how many bytes a plan stores. The UNet's geometry is data (`configs.COMPONENT_CONFIGS`), and the levels follow
from it: the VAE divides the resolution by 2^(its blocks - 1) (8 for SD), the UNet's mid block by another
2^(its blocks - 1); L1 and L2 are the first two up blocks (x2 each), L3 is up2 ⊕ up3 at the latent size.
Cross-attention maps add one channel per text token to their levels; expert taps are resized to the level
they join. `tests/backbones/vermouth` checks the result against a real forward pass of the tiny variant.
"""

from __future__ import annotations

import types
from typing import Any

from backbones.vermouth.cards import LEVELS
from backbones.vermouth.configs import COMPONENT_CONFIGS
from backbones.vermouth.diffusion import level_channels
from backbones.vermouth.expert import EXPERT_TAPS
from backbones.vermouth.options import ExpertSpec, VermouthOptions


def level_sides(arch: str, resolution: int) -> dict[str, int]:
    """Side of each level's square map for a square input of `resolution` px."""
    cfg = COMPONENT_CONFIGS[arch]
    latent = resolution // 2 ** (len(cfg["vae"]["block_out_channels"]) - 1)
    mid = latent // 2 ** (len(cfg["unet"]["block_out_channels"]) - 1)
    return {"L0": mid, "L1": mid * 2, "L2": mid * 4, "L3": latent}


def text_tokens(arch: str) -> int:
    """Context length of the prompt (the text encoder's `TextEncoder.length`): one map channel per token."""
    cfg = COMPONENT_CONFIGS[arch]
    return min(int(cfg["tokenizer"]["model_max_length"]), int(cfg["text_encoder"]["max_position_embeddings"]))


def map_levels(opts: VermouthOptions) -> tuple[str, ...]:
    """The levels that carry cross-attention maps (as `DiffusionFeatures` selects them)."""
    if not opts.cross_attention:
        return ()
    return tuple(s for s in ("L1", "L2", "L3") if s in opts.stages and (s != "L3" or opts.cross_attention_l3))


def expert_channels(kind: str, spec: ExpertSpec) -> dict[str, int]:
    """Channels of each expert tap, from the timm architecture built on the meta device (no weights, no memory)."""
    import timm
    import torch

    kwargs: dict[str, Any] = dict(spec.kwargs)
    if kind == "dinov2":
        kwargs.setdefault("dynamic_img_size", True)
    with torch.device("meta"):
        model = timm.create_model(spec.arch, pretrained=False, num_classes=0, **kwargs)
    if kind == "dinov2":
        return {k: int(model.embed_dim) for k in EXPERT_TAPS[kind]}
    info = {d["module"]: int(d["num_chs"]) for d in model.feature_info}
    return {k: info[k.removeprefix("expert_")] for k in EXPERT_TAPS[kind]}


def feature_shapes(arch: str, opts: VermouthOptions) -> dict[str, dict[str, tuple[int, ...]]]:
    """`{"global": {"global": (D,)}, "dense": {level or tap: (C, H, W)}}` of one image."""
    unet = types.SimpleNamespace(**COMPONENT_CONFIGS[arch]["unet"])
    channels = level_channels(unet, text_tokens(arch), map_levels(opts))
    sides = level_sides(arch, opts.resolution)
    dense: dict[str, tuple[int, ...]] = {s: (channels[s], sides[s], sides[s]) for s in LEVELS if s in opts.stages}
    if opts.expert != "none":
        taps = {k: level for k, (_, level) in EXPERT_TAPS[opts.expert].items() if level in opts.stages}
        tap_channels = expert_channels(opts.expert, opts.experts[opts.expert])
        dense.update({k: (tap_channels[k], sides[level], sides[level]) for k, level in taps.items()})
    pooled = sum(channels[s] for s in opts.stages)  # `global` = the selected levels pooled and concatenated
    return {"global": {"global": (pooled,)}, "dense": dense}
