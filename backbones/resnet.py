"""timm ResNets as frozen feature extractors: pooled pre-logits (global) and the four stage maps (dense).

A preset over the timm backbone every `timm:<model>` member uses (`backbones.timm_backbone`): the same build,
load, preprocessing and dense maps (the last four `forward_intermediates` levels are the four stages); what it
adds is the named variants (`backbones.cards.RESNET`) and stage names for the maps.
"""

from __future__ import annotations

from backbones.cards import RESNET
from backbones.timm_backbone import TimmBackbone
from harness.catalog import register_backbone


@register_backbone("resnet")
class ResNetBackbone(TimmBackbone):
    """A timm ResNet with the classifier removed, in eval mode, gradients off."""

    name = "resnet"
    variants = RESNET
    default_variant = "resnet50"
    feature_kinds = ("global", "dense")
    dense_levels = ("layer1", "layer2", "layer3", "layer4")
