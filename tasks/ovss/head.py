"""The OVSS dense head, the same for every backbone: per-level projections → Semantic-FPN-like fusion →
1×1 to the text dimension → per-pixel cosine against the vocabulary's text embeddings × a learnable scale.

Plain backbones get the projections built here (1×1 conv + GN + SiLU per level); Vermouth brings its own
trainable `dense_neck()` (its OVSS U-head projections + FPN), followed by a 1×1 to the text dimension only
when its embedding width differs. The text embeddings are an input, not a parameter, so swapping the
vocabulary at test time changes nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

INIT_LOGIT_SCALE = 1 / 0.07  # CLIP's initial temperature
MAX_LOGIT_SCALE = 100.0


def level_spec(dense: Mapping[str, torch.Tensor]) -> list[dict[str, Any]]:
    """Per level: name, channels and how many ×2 steps up to the finest level (from one batch's shapes)."""
    top = max(v.shape[-2] for v in dense.values())
    return [{"name": k, "channels": int(v.shape[1]), "ups": max(0, round(math.log2(top / v.shape[-2])))}
            for k, v in dense.items()]


def _gn(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class FPNTextHead(nn.Module):
    """Levels → L2-normalised [B, out_dim, H, W] at the finest level's resolution (plain backbones)."""

    def __init__(self, levels: list[dict[str, Any]], width: int, groups: int, out_dim: int):
        super().__init__()
        self.levels = [lv["name"] for lv in levels]
        self.project = nn.ModuleDict({
            lv["name"]: nn.Sequential(nn.Conv2d(lv["channels"], width, 1, bias=False), _gn(width, groups), nn.SiLU())
            for lv in levels})
        scale_heads = {}
        for lv in levels:  # Semantic FPN: max(1, #ups) × [3×3 conv + GN + ReLU (+ ×2 up)]
            layers: list[nn.Module] = []
            for _ in range(max(1, lv["ups"])):
                layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), _gn(width, groups), nn.ReLU()]
                if lv["ups"]:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            scale_heads[lv["name"]] = nn.Sequential(*layers)
        self.scale_heads = nn.ModuleDict(scale_heads)
        self.to_text = nn.Conv2d(width, out_dim, 1)

    def forward(self, dense: Mapping[str, torch.Tensor]) -> torch.Tensor:
        size = max((dense[k].shape[-2:] for k in self.levels), key=lambda s: s[0] * s[1])
        total: torch.Tensor | None = None
        for name in self.levels:
            y = self.scale_heads[name](self.project[name](dense[name]))
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            total = y if total is None else total + y
        assert total is not None
        return F.normalize(self.to_text(total), dim=1)


class OVSSHead(nn.Module):
    """A pixel embedder (FPNTextHead, or a backbone's dense neck + optional 1×1) and a learnable logit scale."""

    def __init__(self, embedder: nn.Module, adapter: nn.Module | None = None):
        super().__init__()
        self.embedder = embedder
        self.adapter = adapter
        self.log_scale = nn.Parameter(torch.tensor(math.log(INIT_LOGIT_SCALE)))

    def embed(self, dense: Mapping[str, torch.Tensor]) -> torch.Tensor:
        # Frozen features come from inference mode (a clone outside it can be saved for backward) and are
        # stored as float32: they run in the head's own dtype (float64 for `fp64` jobs).
        dtype = self.log_scale.dtype
        feats = {k: (v.clone() if v.is_inference() else v).to(dtype) for k, v in dense.items()}
        pixels = self.embedder(feats)
        if self.adapter is not None:
            pixels = self.adapter(pixels)
        return F.normalize(pixels, dim=1)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, dense: Mapping[str, torch.Tensor], text: torch.Tensor) -> torch.Tensor:
        """[B, K, h, w] logits: scale × cos(pixel embedding, class text embedding [K, D])."""
        pixels = self.embed(dense)
        return self.logit_scale * torch.einsum("bdhw,kd->bkhw", pixels, F.normalize(text.to(pixels.dtype), dim=1))
