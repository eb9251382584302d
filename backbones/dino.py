"""timm DINO / DINOv2 ViTs as frozen feature extractors: the class token (global) and patch-token maps from
several depths (dense).

Built from timm's architecture with `pretrained=False` and filled from the file that `harness.weights`
resolved (as `backbones.resnet`). Preprocessing is timm's data config for the model (`resolve_model_data_config`
+ `create_transform`): resize, center-crop, normalise, so a non-square image comes out square. The model is
built with `dynamic_img_size=True`, so `image_features` also takes tensors of other (non-square) sizes: timm
resamples the positional embedding to the input's patch grid; at the native size it is used unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import timm
import timm.data
import torch

from backbones.cards import DINO
from backbones.common import (
    check_kinds,
    compute_context,
    dense_block_indices,
    freeze,
    load_strict,
    timm_weights_data_cfg,
    torch_dtype,
)
from harness.api import Backbone, Features
from harness.catalog import register_backbone
from harness.errors import HarnessError
from harness.weights import ResolvedWeights, load_state_dict, resolve_weights

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from harness.config import BackboneConfig





@register_backbone("dino")
class DINOBackbone(Backbone):
    """A timm ViT with the classifier removed (`num_classes=0`), in eval mode, gradients off."""

    name = "dino"
    variants = DINO
    default_variant = "vit-b-16"
    feature_kinds = ("global", "dense")

    def __init__(self, config: BackboneConfig):
        super().__init__(config)
        torch_dtype(config.dtype)  # validates the name before any work
        self.device = torch.device(config.device)
        self.weights: ResolvedWeights = resolve_weights(config.weights or self.card.weights, seed=config.seed)
        # Preprocessing: timm's cfg for the arch < the weights' config.json < the card's overlay.
        card_overlay = self.card.extra.get("pretrained_cfg_overlay", {})
        overlay = {**timm_weights_data_cfg(self.weights.path), **card_overlay}
        self.model_kwargs: dict[str, Any] = dict(self.card.extra.get("model_kwargs", {}))
        with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
            torch.manual_seed(config.seed)
            model = timm.create_model(self.card.arch, pretrained=False, num_classes=0, dynamic_img_size=True,
                                      pretrained_cfg_overlay=overlay or None, **self.model_kwargs)
        if self.weights.path is not None:
            self._load(model, self.weights.path)
        self.model = freeze(model, self.device)
        self.data_config: dict[str, Any] = dict(timm.data.resolve_model_data_config(model))
        self._transform = timm.data.create_transform(**self.data_config, is_training=False)
        self._dense_indices = dense_block_indices(len(model.blocks))
        self.dense_levels = tuple(f"block{i + 1}" for i in self._dense_indices)

    @staticmethod
    def _load(model: torch.nn.Module, path: Path) -> None:
        """Strict load, except a classifier (`head.*`), which `num_classes=0` removed on purpose."""
        state = {k: v for k, v in load_state_dict(path).items() if not k.startswith("head.")}
        load_strict(model, state, path)

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> [B, 3, S, S] on the CPU (resize, center-crop, normalise as timm's config says)."""
        return torch.stack([self._transform(im if im.mode == "RGB" else im.convert("RGB")) for im in images])

    def image_features(self, batch: torch.Tensor, kinds: Sequence[str] = ("global",)) -> Features:
        """One forward pass for any mix of kinds; features come back as fp32 whatever the compute dtype.

        global: `forward_head(forward_features(x), pre_logits=True)`, the normed class token.
        dense: patch tokens after blocks `dense_levels` (1-based), through the final norm (`norm=True`, as
        DINOv2's `get_intermediate_layers` does), prefix tokens dropped, as [B, D, H/p, W/p].
        Any input whose sides are multiples of the patch size works (timm's `dynamic_img_size`).
        """
        check_kinds(self.name, kinds, self.feature_kinds)
        ph, pw = self.model.patch_embed.patch_size
        if batch.shape[-2] % ph or batch.shape[-1] % pw:
            raise HarnessError(f"backbone '{self.name}': input {tuple(batch.shape[-2:])} is not a multiple of the "
                               f"patch size {(ph, pw)} (preprocess() always gives a valid size)")
        with compute_context(self.device, self.config.dtype):
            x = batch.to(self.device, non_blocking=True)
            out = Features()
            if "dense" in kinds:
                res = self.model.forward_intermediates(x, indices=self._dense_indices, norm=True, output_fmt="NCHW",
                                                       intermediates_only="global" not in kinds)
                last, maps = (None, res) if "global" not in kinds else res
                out.dense = {name: m.float() for name, m in zip(self.dense_levels, maps, strict=True)}
            else:
                last = self.model.forward_features(x)
            if "global" in kinds:
                out.global_ = self.model.forward_head(last, pre_logits=True).float()
        return out

    def fingerprint(self) -> dict[str, Any]:
        fp = {
            "backbone": self.name,
            "variant": self.card.name,
            "arch": self.card.arch,
            "weights": self.weights.fingerprint,
            "weights_kind": self.weights.kind,
            "input_size": list(self.data_config["input_size"]),
            "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()},
            "dtype": self.config.dtype,
        }
        if self.model_kwargs:
            fp["model_kwargs"] = self.model_kwargs
        return fp
