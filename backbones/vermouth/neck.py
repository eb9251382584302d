"""The trainable neck: expert adapters (if an expert is on) + the U-head (global) or its OVSS variant (dense).

It reads the backbone's cacheable `dense` dict ("L0".."L3" + "expert_*" taps), so tasks train it on cached
frozen features exactly as they train a head.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from backbones.vermouth.expert import ExpertFusion


class VermouthNeck(nn.Module):
    """dense dict → `head(fused levels)`: [B, D] for the U-head, [B, D, H, W] for the dense head."""

    def __init__(self, levels: tuple[str, ...], head: nn.Module, fusion: ExpertFusion | None = None):
        super().__init__()
        self.levels = levels
        self.fusion = fusion
        self.head = head

    def forward(self, dense: Mapping[str, torch.Tensor]) -> torch.Tensor:
        # Features made under inference mode cannot be saved for backward; a clone outside it can.
        feats = {k: (v.clone() if v.is_inference() else v) for k, v in dense.items()}
        levels = {k: feats[k] for k in self.levels}
        if self.fusion is not None:
            levels = self.fusion(levels, feats)
        return self.head(levels)
