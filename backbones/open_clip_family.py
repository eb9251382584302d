"""`open_clip:<arch>[/<pretrained tag>]`: any open_clip model as a backbone, with no code
(`-b open_clip:ViT-B-32/laion2b_s34b_b79k`).

Built like the built-in `clip` backbone (`backbones.clip.CLIPBackbone`, which this subclasses with a generated
card): open_clip's factory with `pretrained=None`, then filled strictly from what `--weights` resolves (a hub id,
a local file or folder, or `random`), never from open_clip's own downloader. The default weights are the tag's
hub copy (`open_clip.get_pretrained_cfg(arch, tag)["hf_hub"]`, e.g. `timm/vit_base_patch32_clip_224.openai`);
a name without a tag has none, so `--weights` is required. Preprocessing: open_clip's eval transform with the
tag's mean / std / interpolation / resize mode, overlaid by the weights' `open_clip_config.json`
`preprocess_cfg` where they have one; QuickGELU as the tag (or that file's `model_cfg`) says.

The architecture is open_clip's config for `<arch>`, unless the weights carry an `open_clip_config.json` with a
`model_cfg` (open_clip's own save format, `save_for_hf`): that config is then built instead, as open_clip's
`hf-hub:` / `local-dir:` loaders do, and it joins the fingerprint. This is how a model of a custom (or shrunk)
config runs: name its base arch (`-b open_clip:ViT-S-32 --weights <folder saved by open_clip>`); `<arch>` must
still be one open_clip knows (`open_clip.list_models()`, or one added in-process with `open_clip.add_model_config`).

global = the projected image embedding (`encode_image`); dense = ViT patch maps / ModifiedResNet stages as
`clip` gives them (a timm-trunk tower is global-only); the text tower is kept (`text_features`,
`prompt_embeddings`). The tokenizer is open_clip's for `<arch>`, made on first use (SigLIP's needs its HF files).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import open_clip
import torch

from backbones.clip import OPEN_CLIP_FILENAMES, RESNET_STAGES, CLIPBackbone, _weights_config
from backbones.common import dense_block_indices
from harness.api import VariantCard
from harness.data.weights import resolve_weights
from harness.errors import HarnessError, UnknownNameError

if TYPE_CHECKING:  # pragma: no cover
    from harness.config import BackboneConfig


def _hub_copy(arch: str, tag: str) -> tuple[str, str]:
    """The tag's hub copy as (repo id, file name or ""): open_clip's `hf_hub` is `org/repo/` or `org/repo/file`."""
    parts = str(open_clip.get_pretrained_cfg(arch, tag).get("hf_hub") or "").strip("/").split("/")
    return ("/".join(parts[:2]), "/".join(parts[2:])) if len(parts) >= 2 else ("", "")


def _image_kinds(model_cfg: dict[str, Any]) -> tuple[str, ...]:
    """What `CLIPBackbone` gives for the tower: dense maps for a ViT or ModifiedResNet, not for a timm trunk."""
    return ("global",) if model_cfg["vision_cfg"].get("timm_model_name") else ("global", "dense")


def _dense_levels(model_cfg: dict[str, Any]) -> tuple[str, ...]:
    vision = model_cfg["vision_cfg"]
    if vision.get("timm_model_name"):
        return ()
    if isinstance(vision.get("layers"), (list, tuple)):
        return RESNET_STAGES
    return tuple(f"block{i + 1}" for i in dense_block_indices(int(vision["layers"])))


class _LazyTokenizer:
    """open_clip's tokenizer for an arch, made on first call: an image-only run never loads (or fetches) one."""

    def __init__(self, arch: str, context_length: int):
        self.arch, self.context_length = arch, context_length

    @functools.cached_property
    def tokenizer(self) -> Callable[[Sequence[str]], torch.Tensor]:
        return open_clip.get_tokenizer(self.arch, context_length=self.context_length)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(texts)


class OpenClipFamilyBackbone(CLIPBackbone):
    """An open_clip model chosen by name; the factory `open_clip_backbone` makes one subclass per name."""

    family = "open_clip"  # a family member: one variant, the suite's `variant` does not apply (harness.plan.planner)

    def __init__(self, config: BackboneConfig):
        self._check_weights(config)
        super().__init__(config)

    @classmethod
    def _check_weights(cls, config: BackboneConfig) -> None:
        if not (config.weights or cls.variants["default"].weights):
            raise HarnessError(f"backbone '{cls.name}' has no default weights (they come with a pretrained tag, "
                               f"open_clip:<arch>/<tag>); pass --weights FILE|FOLDER|HUB_ID (or --weights random "
                               f"for a smoke test)")

    @classmethod
    def weights_fingerprint(cls, config: BackboneConfig) -> str:
        cls._check_weights(config)  # the planner asks first: the same one line, before any "" path lookup
        return super().weights_fingerprint(config)

    @classmethod
    def _local_weights_cfg(cls, config: BackboneConfig) -> dict[str, Any]:
        """The `open_clip_config.json` of local weights (never a hub lookup: this runs at planning), else {}."""
        spec = config.weights or cls.variants["default"].weights
        if not spec or not Path(spec).expanduser().exists():
            return {}
        try:
            return _weights_config(resolve_weights(spec, seed=config.seed, filenames=cls.weight_filenames).path)
        except HarnessError:  # an unusable file: the planner's weights check names it
            return {}

    @classmethod
    def _shape_source(cls, config: BackboneConfig) -> tuple[dict[str, Any] | None, Any]:
        model_cfg, size = super()._shape_source(config)
        weights_cfg = cls._local_weights_cfg(config)
        if isinstance(weights_cfg.get("model_cfg"), dict):
            model_cfg = weights_cfg["model_cfg"]
        return model_cfg, (weights_cfg.get("preprocess_cfg") or {}).get("size") or size

    def _model_cfg(self) -> dict[str, Any] | None:
        """The weights' own `model_cfg` (open_clip's hf-hub / local-dir rule), else None: open_clip's arch config."""
        if not hasattr(self, "_weights_model_cfg"):
            cfg = _weights_config(self.weights.path).get("model_cfg")
            self._weights_model_cfg = cfg if isinstance(cfg, dict) else None
        return self._weights_model_cfg

    def _tokenizer(self) -> Callable[[Sequence[str]], torch.Tensor]:
        return _LazyTokenizer(self.card.arch, self.model.context_length)


def _class_name(spec: str) -> str:
    return "OpenClip_" + re.sub(r"\W", "_", spec)


@functools.cache
def open_clip_backbone(spec: str) -> type[OpenClipFamilyBackbone]:
    """The backbone class of `open_clip:<spec>` (`<arch>` or `<arch>/<pretrained tag>`); an unknown arch or tag
    is a one-line error naming the choices."""
    arch, _, tag = spec.partition("/")
    model_cfg = open_clip.get_model_config(arch)
    if not model_cfg:
        raise UnknownNameError("open_clip model", arch, open_clip.list_models())
    weights, filename = "", ""
    if tag:
        if not open_clip.get_pretrained_cfg(arch, tag):
            tags = open_clip.list_pretrained_tags_by_model(arch)
            raise HarnessError(f"open_clip model '{arch}' has no pretrained tag '{tag}'; its tags: "
                               f"{', '.join(tags) or '(none: pass --weights and no tag)'}")
        weights, filename = _hub_copy(arch, tag)
    kinds = _image_kinds(model_cfg)
    extra: dict[str, Any] = {"embed_dim": int(model_cfg["embed_dim"]), "feature_kinds": [*kinds, "text"],
                             "dense_levels": list(_dense_levels(model_cfg))}
    if tag:
        extra["pretrained_tag"] = tag  # CLIPBackbone reads the tag's preprocessing and QuickGELU from it
    card = VariantCard(name="default", arch=arch, weights=weights, extra=extra,
                       description=f"open_clip '{arch}'" + (f", pretrained tag '{tag}'" if tag else ""))
    attrs = {"name": f"open_clip:{spec}", "variants": {"default": card}, "default_variant": "default",
             "feature_kinds": kinds, "__module__": __name__,
             "weight_filenames": (filename, *OPEN_CLIP_FILENAMES) if filename else OPEN_CLIP_FILENAMES}
    return type(_class_name(spec), (OpenClipFamilyBackbone,), attrs)
