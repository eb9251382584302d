"""timm DINO / DINOv2 ViTs as frozen feature extractors: the class token (global) and patch-token maps from
several depths (dense).

Built, loaded, preprocessed and fingerprinted as every timm backbone (`backbones.timm_backbone`, as
`backbones.resnet` and the `timm:` family): timm's architecture with `pretrained=False`, filled from the file
that `harness.data.weights` resolved. Its dense maps are not the family's last four blocks but blocks evenly spaced
over the depth through the final norm (DINOv2's `get_intermediate_layers`), the method's protocol.
Preprocessing is timm's data config for the model (`resolve_model_data_config` + `create_transform`):
resize, center-crop, normalise, so a non-square image comes out square. The model is built with
`dynamic_img_size=True`, so `image_features` also takes tensors of other (non-square) sizes: timm resamples
the positional embedding to the input's patch grid; at the native size it is used unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from backbones.cards import DINO
from backbones.common import dense_block_indices
from backbones.timm_backbone import TimmBackbone
from harness.catalog import register_backbone
from harness.errors import HarnessError

if TYPE_CHECKING:  # pragma: no cover
    from harness.config import BackboneConfig

@register_backbone("dino")
class DINOBackbone(TimmBackbone):
    """A timm ViT with the classifier removed, in eval mode, gradients off.

    global: `forward_head(forward_features(x), pre_logits=True)`, the normed class token.
    dense: patch tokens after blocks `dense_levels` (1-based), through the final norm (`norm=True`, as
    DINOv2's `get_intermediate_layers` does), prefix tokens dropped, as [B, D, H/p, W/p].
    Any input whose sides are multiples of the patch size works (timm's `dynamic_img_size`).
    """

    name = "dino"
    variants = DINO
    default_variant = "vit-b-16"
    feature_kinds = ("global", "dense")
    create_kwargs = {"dynamic_img_size": True}

    def __init__(self, config: BackboneConfig):
        super().__init__(config)
        self._dense_indices = dense_block_indices(len(self.model.blocks))
        self.dense_levels = tuple(f"block{i + 1}" for i in self._dense_indices)

    @classmethod
    def _dense_shapes(cls, model: torch.nn.Module, height: int, width: int) -> dict[str, tuple[int, ...]]:
        """Patch-token maps [D, H/p, W/p] after the blocks `dense_block_indices` picks."""
        ph, pw = model.patch_embed.patch_size
        return {f"block{i + 1}": (int(model.embed_dim), height // ph, width // pw)
                for i in dense_block_indices(len(model.blocks))}

    def _check_batch(self, batch: torch.Tensor) -> None:
        ph, pw = self.model.patch_embed.patch_size
        if batch.shape[-2] % ph or batch.shape[-1] % pw:
            raise HarnessError(f"backbone '{self.name}': input {tuple(batch.shape[-2:])} is not a multiple of the "
                               f"patch size {(ph, pw)} (preprocess() always gives a valid size)")

    def _forward_dense(self, x: torch.Tensor, with_last: bool) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        res = self.model.forward_intermediates(x, indices=self._dense_indices, norm=True, output_fmt="NCHW",
                                               intermediates_only=not with_last)
        last, maps = res if with_last else (None, res)
        return last, dict(zip(self.dense_levels, maps, strict=True))
