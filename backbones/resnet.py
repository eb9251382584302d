"""timm ResNets as frozen feature extractors: pooled pre-logits (global) and the four stage maps (dense).

The model is always built from timm's architecture with `pretrained=False` and then filled from the
file that `harness.weights` resolved, so the harness (not timm's downloader) decides where weights come
from and fingerprints them. Preprocessing is timm's own data config for the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import timm
import timm.data
import torch

from backbones.cards import RESNET
from backbones.common import (
    check_kinds,
    compute_context,
    freeze,
    load_strict,
    timm_weights_data_cfg,
    torch_dtype,
)
from harness.api import Backbone, Features
from harness.catalog import register_backbone
from harness.weights import ResolvedWeights, load_state_dict, resolve_weights

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from harness.config import BackboneConfig

STAGES = ("layer1", "layer2", "layer3", "layer4")



@register_backbone("resnet")
class ResNetBackbone(Backbone):
    """A timm ResNet with the classifier removed (`num_classes=0`), in eval mode, gradients off."""

    name = "resnet"
    variants = RESNET
    default_variant = "resnet50"
    feature_kinds = ("global", "dense")

    def __init__(self, config: BackboneConfig):
        super().__init__(config)
        torch_dtype(config.dtype)  # validates the name before any work
        self.device = torch.device(config.device)
        self.weights: ResolvedWeights = resolve_weights(config.weights or self.card.weights, seed=config.seed)
        # Preprocessing: timm's cfg for the arch < the weights' config.json < the card's overlay.
        card_overlay = self.card.extra.get("pretrained_cfg_overlay", {})
        overlay = {**timm_weights_data_cfg(self.weights.path), **card_overlay}
        with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
            torch.manual_seed(config.seed)
            model = timm.create_model(self.card.arch, pretrained=False, num_classes=0,
                                      pretrained_cfg_overlay=overlay or None)
        if self.weights.path is not None:
            self._load(model, self.weights.path)
        self.model = freeze(model, self.device)
        self.data_config: dict[str, Any] = dict(timm.data.resolve_model_data_config(model))
        self._transform = timm.data.create_transform(**self.data_config, is_training=False)

    @staticmethod
    def _load(model: torch.nn.Module, path: Path) -> None:
        """Strict load, except the classifier (`fc.*`), which `num_classes=0` removed on purpose."""
        state = {k: v for k, v in load_state_dict(path).items() if not k.startswith("fc.")}
        load_strict(model, state, path)

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> [B, 3, H, W] on the CPU (resize, crop, normalise as timm's config says)."""
        return torch.stack([self._transform(im if im.mode == "RGB" else im.convert("RGB")) for im in images])

    def image_features(self, batch: torch.Tensor, kinds: Sequence[str] = ("global",)) -> Features:
        """One forward pass for any mix of kinds; features come back as fp32 whatever the compute dtype."""
        check_kinds(self.name, kinds, self.feature_kinds)
        with compute_context(self.device, self.config.dtype):
            x = batch.to(self.device, non_blocking=True)
            out = Features()
            if "dense" in kinds:
                last, maps = self.model.forward_intermediates(x, indices=[1, 2, 3, 4])  # 0 is the stem
                out.dense = {name: m.float() for name, m in zip(STAGES, maps, strict=True)}
            else:
                last = self.model.forward_features(x)
            if "global" in kinds:
                out.global_ = self.model.forward_head(last, pre_logits=True).float()
        return out

    def fingerprint(self) -> dict[str, Any]:
        return {
            "backbone": self.name,
            "variant": self.card.name,
            "arch": self.card.arch,
            "weights": self.weights.fingerprint,
            "weights_kind": self.weights.kind,
            "input_size": list(self.data_config["input_size"]),
            "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()},
            "dtype": self.config.dtype,
        }
