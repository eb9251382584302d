"""The trainable heads on the frozen levels: the U-head (FSC/SBIR, §4.1/§11.5) and its OVSS variant (§4.2/§11.8).

U-head: per level a 1×1 conv (no bias) + GroupNorm + SiLU; fusion runs high → low resolution, each level's
conv also reading the 2×2-average-pooled output of the level above it; the lowest level's map is pooled to
4×4 and a CLIP-style attention pool maps it to the embedding, L2-normalised. Levels missing from `stages`
are skipped: the pooled map is then average-pooled to the next level's size (2×2 pooling when adjacent).
Dense head: per-level 1×1 conv + GN + SiLU projections, a Semantic-FPN head (3×3 conv + GN + ReLU, ×2
upsampling until the highest resolution, summed), dropout and a 1×1 conv to per-pixel L2-normalised embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def init_weights(module: nn.Module) -> None:
    """The method's init: Kaiming-normal convs, N(0, 0.02) linears, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def fuse_block(in_channels: int, out_channels: int, groups: int) -> nn.Sequential:
    """1×1 conv (no bias) → GroupNorm → SiLU: the method's FuseBlock as the `tiny` arch uses it."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                         nn.GroupNorm(math.gcd(groups, out_channels), out_channels), nn.SiLU())


class AttentionPool2d(nn.Module):
    """CLIP-ResNet-style attention pooling: the mean token attends to itself + the spatial tokens.

    Learned position embeddings for the (mean + side²) tokens, multi-head attention with q/k/v/out
    projections; the output is the projected mean token.
    """

    def __init__(self, side: int, channels: int, heads: int, out_dim: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention pool: {channels} channels do not split into {heads} heads")
        self.side, self.heads = side, heads
        self.position = nn.Parameter(torch.randn(side * side + 1, channels) / channels**0.5)
        self.q, self.k, self.v = (nn.Linear(channels, channels) for _ in range(3))
        self.out = nn.Linear(channels, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[:2]
        tokens = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1) + self.position.to(x.dtype)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, t.shape[1], self.heads, channels // self.heads).transpose(1, 2)

        pooled = F.scaled_dot_product_attention(split(self.q(tokens[:, :1])), split(self.k(tokens)),
                                                split(self.v(tokens)))
        return self.out(pooled.transpose(1, 2).reshape(batch, channels))


class UHead(nn.Module):
    """Levels {"L0".."L3": [B, C, h, w]} (any non-empty subset) → L2-normalised embeddings [B, embed_dim]."""

    def __init__(self, in_channels: Mapping[str, int], widths: Sequence[int], groups: int, heads: int,
                 embed_dim: int, pool_size: int = 4):
        super().__init__()
        self.levels = sorted(in_channels)  # L0 (lowest resolution) first
        self.pool_size = pool_size
        width = {level: widths[int(level[1:])] for level in self.levels}
        blocks: dict[str, nn.Module] = {}
        above: str | None = None
        for level in reversed(self.levels):  # high → low resolution
            extra = width[above] if above is not None else 0
            blocks[level] = fuse_block(in_channels[level] + extra, width[level], groups)
            above = level
        self.blocks = nn.ModuleDict(blocks)
        self.pool = AttentionPool2d(pool_size, width[self.levels[0]], heads, embed_dim)
        init_weights(self)

    def forward(self, levels: Mapping[str, torch.Tensor]) -> torch.Tensor:
        h: torch.Tensor | None = None
        for level in reversed(self.levels):
            x = levels[level]
            if h is not None:
                x = torch.cat([x, F.adaptive_avg_pool2d(h, x.shape[-2:])], dim=1)
            h = self.blocks[level](x)
        assert h is not None
        if h.shape[-2:] != (self.pool_size, self.pool_size):
            h = F.adaptive_avg_pool2d(h, self.pool_size)
        return F.normalize(self.pool(h), dim=-1)


class DenseUHead(nn.Module):
    """Levels → per-pixel L2-normalised embeddings [B, embed_dim, H, W] at the highest level's resolution."""

    def __init__(self, in_channels: Mapping[str, int], widths: Sequence[int], fpn_channels: int, groups: int,
                 embed_dim: int, dropout: float = 0.1):
        super().__init__()
        self.levels = sorted(in_channels)
        top = int(self.levels[-1][1:])  # the highest-resolution level: stride ratio 2 per level index
        self.project = nn.ModuleDict({
            lv: fuse_block(in_channels[lv], widths[int(lv[1:])], groups) for lv in self.levels})
        heads: dict[str, nn.Module] = {}
        for lv in self.levels:
            ups = top - int(lv[1:])
            layers: list[nn.Module] = []
            for step in range(max(1, ups)):
                cin = widths[int(lv[1:])] if step == 0 else fpn_channels
                layers += [nn.Conv2d(cin, fpn_channels, 3, padding=1, bias=False),
                           nn.GroupNorm(math.gcd(groups, fpn_channels), fpn_channels), nn.ReLU()]
                if ups:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            heads[lv] = nn.Sequential(*layers)
        self.scale_heads = nn.ModuleDict(heads)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(fpn_channels, embed_dim, 1)
        init_weights(self)

    def forward(self, levels: Mapping[str, torch.Tensor]) -> torch.Tensor:
        size = levels[self.levels[-1]].shape[-2:]
        total: torch.Tensor | None = None
        for lv in self.levels:
            y = self.scale_heads[lv](self.project[lv](levels[lv]))
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            total = y if total is None else total + y
        assert total is not None
        return F.normalize(self.classifier(self.dropout(total)), dim=1)
