"""What every timm backbone (`backbones.resnet`, `backbones.dino`, the `timm:` family) shares: the build, the
preprocessing, the checkpoint load, the dense maps, the single-pass forward and the fingerprint.

The model is always built from timm's architecture with `pretrained=False`, without its classifier
(`num_classes=0`), seeded, and then filled from the file that `harness.data.weights` resolved, so the harness (not
timm's downloader) decides where weights come from and fingerprints them. Preprocessing is timm's own data
config for the model (`resolve_model_data_config` + `create_transform`). A checkpoint may carry the
classifier that `num_classes=0` removed (timm's `pretrained_cfg["classifier"]` names it); any other mismatch is
an error. Dense maps are the deepest `len(dense_levels)` levels of timm's `forward_intermediates`; a subclass
names them, adds `create_model` arguments, or (DINO) takes other levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import timm
import timm.data
import torch

from backbones.common import (
    check_kinds,
    compute_context,
    freeze,
    identity_fingerprint,
    load_strict,
    timm_weights_data_cfg,
    torch_dtype,
    weights_dtype,
)
from harness.api import Backbone, Features, FeatureShapes
from harness.data.weights import ResolvedWeights, load_state_dict, resolve_weights
from harness.numerics import seeded_init, to_float32

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from harness.config import BackboneConfig


def classifier_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
    """The state-dict prefixes of the classifier that `num_classes=0` removed (timm's `pretrained_cfg`)."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    return tuple(f"{n}." for n in ((names,) if isinstance(names, str) else names))


class TimmBackbone(Backbone):
    """A timm model with the classifier removed (`num_classes=0`), in eval mode, gradients off."""

    # The names of the dense maps: the deepest `len(dense_levels)` levels of `forward_intermediates`.
    dense_levels: tuple[str, ...] = ()
    # `timm.create_model` arguments every variant of the backbone gets (a card adds `extra["model_kwargs"]`).
    create_kwargs: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: BackboneConfig):
        super().__init__(config)
        torch_dtype(config.dtype)  # validates the name before any work
        self.device = torch.device(config.device)
        self.weights: ResolvedWeights = resolve_weights(config.weights or self.card.weights, seed=config.seed)
        # Preprocessing: timm's cfg for the arch < the weights' config.json < the card's overlay.
        card_overlay = self.card.extra.get("pretrained_cfg_overlay", {})
        overlay = {**timm_weights_data_cfg(self.weights.path), **card_overlay}
        self.model_kwargs: dict[str, Any] = dict(self.card.extra.get("model_kwargs", {}))
        with seeded_init(config.seed, portable=self.weights.path is None):  # caller's RNG untouched
            model = timm.create_model(self.card.arch, pretrained=False, num_classes=0, **self.create_kwargs,
                                      pretrained_cfg_overlay=overlay or None, **self.model_kwargs)
        if self.weights.path is not None:
            self._load(model, self.weights.path)
        self.model = freeze(model, self.device, config.dtype)
        self.data_config: dict[str, Any] = dict(timm.data.resolve_model_data_config(model))
        self._transform = timm.data.create_transform(**self.data_config, is_training=False)

    @classmethod
    def feature_shapes(cls, config: BackboneConfig) -> FeatureShapes:
        """The architecture built on the meta device (no weights, no memory, no compute) at the card's input
        size: `global` is the pre-logits width, `dense` the subclass's `_dense_shapes`."""
        card = cls.variants[config.variant or cls.default_variant]
        overlay = cls._shape_overlay(config) or None
        with torch.device("meta"):
            model = timm.create_model(card.arch, pretrained=False, num_classes=0, **cls.create_kwargs,
                                      pretrained_cfg_overlay=overlay, **card.extra.get("model_kwargs", {}))
        _, height, width = timm.data.resolve_model_data_config(model)["input_size"]
        width_out = int(getattr(model, "head_hidden_size", None) or model.num_features)
        shapes: FeatureShapes = {"global": {"global": (width_out,)}}
        if "dense" in cls.feature_kinds:
            shapes["dense"] = cls._dense_shapes(model, int(height), int(width))
        return shapes

    @classmethod
    def _shape_overlay(cls, config: BackboneConfig) -> dict[str, Any]:
        """The `pretrained_cfg` overlay `feature_shapes` builds with: the card's (the weights are not resolved)."""
        return dict(cls.variants[config.variant or cls.default_variant].extra.get("pretrained_cfg_overlay", {}))

    @classmethod
    def _dense_shapes(cls, model: torch.nn.Module, height: int, width: int) -> dict[str, tuple[int, ...]]:
        """`{name: (C, H, W)}` of the dense maps, from a forward pass on the meta device (no memory, no compute)."""
        with torch.device("meta"):
            maps = model.forward_intermediates(torch.empty(1, 3, height, width), indices=len(cls.dense_levels),
                                               intermediates_only=True)
        return {name: tuple(int(s) for s in m.shape[1:]) for name, m in zip(cls.dense_levels, maps, strict=True)}

    @classmethod
    def _load(cls, model: torch.nn.Module, path: Path) -> None:
        """Strict load, except the classifier, which `num_classes=0` removed on purpose."""
        prefixes = classifier_prefixes(model)
        state = {k: v for k, v in load_state_dict(path).items() if not (prefixes and k.startswith(prefixes))}
        load_strict(model, state, path)

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> [B, 3, H, W] on the CPU (resize, crop, normalise as timm's config says)."""
        return torch.stack([self._transform(im if im.mode == "RGB" else im.convert("RGB")) for im in images])

    def _check_batch(self, batch: torch.Tensor) -> None:
        """Reject an input the model cannot take, before any work (any size by default)."""

    def _forward_dense(self, x: torch.Tensor, with_last: bool) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """The final features (None when `with_last` is false) and the named dense maps, in one pass."""
        res = self.model.forward_intermediates(x, indices=len(self.dense_levels), intermediates_only=not with_last)
        last, maps = res if with_last else (None, res)
        return last, dict(zip(self.dense_levels, maps, strict=True))

    def image_features(self, batch: torch.Tensor, kinds: Sequence[str] = ("global",)) -> Features:
        """One forward pass for any mix of kinds; features come back as fp32 whatever the compute dtype.

        global: `forward_head(forward_features(x), pre_logits=True)`; dense: the subclass's `_forward_dense`.
        """
        check_kinds(self.name, kinds, self.feature_kinds)
        self._check_batch(batch)
        with compute_context(self.device, self.config.dtype):
            x = batch.to(self.device, weights_dtype(self.config.dtype), non_blocking=True)
            out = Features()
            if "dense" in kinds:
                last, maps = self._forward_dense(x, with_last="global" in kinds)
                out.dense = {name: to_float32(m) for name, m in maps.items()}
            else:
                last = self.model.forward_features(x)
            if "global" in kinds:
                out.global_ = to_float32(self.model.forward_head(last, pre_logits=True))
        return out

    def fingerprint(self) -> dict[str, Any]:
        fp = {**identity_fingerprint(self, self.weights, self.data_config["input_size"], self.data_config),
              "dtype": self.config.dtype}
        if self.model_kwargs:
            fp["model_kwargs"] = self.model_kwargs
        return fp
