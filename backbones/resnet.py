"""timm ResNets as frozen feature extractors: pooled pre-logits (global) and the four stage maps (dense).

Built, preprocessed and fingerprinted as every timm backbone (`backbones.timm_backbone`): timm's architecture
with `pretrained=False`, filled from the file that `harness.weights` resolved; timm's own data config.
"""

from __future__ import annotations

import torch

from backbones.cards import RESNET
from backbones.timm_backbone import TimmBackbone
from harness.catalog import register_backbone

STAGES = ("layer1", "layer2", "layer3", "layer4")


@register_backbone("resnet")
class ResNetBackbone(TimmBackbone):
    """A timm ResNet with the classifier (`fc.*`) removed, in eval mode, gradients off."""

    name = "resnet"
    variants = RESNET
    default_variant = "resnet50"
    feature_kinds = ("global", "dense")
    classifier_prefix = "fc."

    @classmethod
    def _dense_shapes(cls, model: torch.nn.Module, height: int, width: int) -> dict[str, tuple[int, ...]]:
        """Each stage at its reduction: every stride-2 step (padded conv or pool) gives ceil(side / 2)."""
        out = {}
        for info in model.feature_info[1:]:  # 0 is the stem
            h, w = height, width
            for _ in range(int(info["reduction"]).bit_length() - 1):
                h, w = -(-h // 2), -(-w // 2)
            out[info["module"]] = (int(info["num_chs"]), h, w)
        return dict(zip(STAGES, out.values(), strict=True))

    def _forward_dense(self, x: torch.Tensor, with_last: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The four stage outputs `STAGES` (and the final features, always computed)."""
        last, maps = self.model.forward_intermediates(x, indices=[1, 2, 3, 4])  # 0 is the stem
        return last, dict(zip(STAGES, maps, strict=True))
