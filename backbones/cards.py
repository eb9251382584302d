"""Variant cards of the built-in backbones: plain data, torch-free, so listing and planning stay cheap.

Preprocessing is not re-typed here: it comes from timm's own pretrained config (and the weights'
config.json when present). A card's `extra["pretrained_cfg_overlay"]` may override parts of it.
"""

from __future__ import annotations

from harness.api import VariantCard

RESNET: dict[str, VariantCard] = {
    "resnet50": VariantCard(
        name="resnet50", arch="resnet50", weights="timm/resnet50.a1_in1k",
        description="ResNet-50, timm RSB A1 recipe on ImageNet-1k (2048-d global, 224 px)",
    ),
    "resnet101": VariantCard(
        name="resnet101", arch="resnet101", weights="timm/resnet101.a1h_in1k",
        description="ResNet-101, timm RSB A1h recipe on ImageNet-1k (2048-d global, 224 px)",
    ),
    "tiny": VariantCard(
        name="tiny", arch="resnet10t", weights="random",
        description="ResNet-10-T, random init at 112 px: a fast CPU stand-in for tests and the mini suite",
        # 112 px instead of timm's 176 keeps the CPU mini suite fast.
        extra={"pretrained_cfg_overlay": {"input_size": (3, 112, 112)}},
    ),
}
