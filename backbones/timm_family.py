"""`timm:<model>`: any timm model as a backbone, with no code (`-b timm:convnext_tiny`).

Built like every timm backbone (`backbones.timm_backbone`): the architecture with `pretrained=False`, filled
from what `--weights` resolves (a hub id such as `timm/convnext_tiny.fb_in22k`, a local file or folder, or
`random`), never from timm's own downloader. The name may carry a pretrained tag (`timm:convnext_tiny.fb_in22k`);
the default weights are that tag's hub copy (`timm/<model>.<tag>`), or the model's default tag. Preprocessing
is timm's data config for the model, overlaid by the weights' `config.json` (`pretrained_cfg`).

global = pre-logits (`forward_head(..., pre_logits=True)`); dense = the last four feature levels of
`forward_intermediates` (a CNN's stages, a ViT's last four blocks as [D, H/p, W/p] maps) where the model has
it, else the backbone is global-only and a task that needs dense maps is refused at planning.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import timm
import timm.data
import torch

from backbones.common import timm_weights_data_cfg
from backbones.timm_backbone import TimmBackbone
from harness.api import VariantCard
from harness.data.weights import resolve_weights
from harness.errors import HarnessError, UnknownNameError

DENSE_LEVELS = 4  # the deepest levels of `forward_intermediates` kept as dense maps


def _meta_model(arch: str, kwargs: dict[str, Any]) -> torch.nn.Module:
    with torch.device("meta"):
        return timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)


def _meta_model_and_kwargs(arch: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model on the meta device and its `create_model` arguments: `dynamic_img_size=True` where the model
    takes it (ViTs: dense heads feed crops of any multiple of the patch size), nothing otherwise."""
    try:
        return _meta_model(arch, {"dynamic_img_size": True}), {"dynamic_img_size": True}
    except TypeError:
        return _meta_model(arch, {}), {}


def _default_weights(arch: str, tag: str) -> str:
    """`timm/<arch>.<tag>`, the tag given or timm's default one; "" when timm knows no published weights."""
    if tag:
        return f"timm/{arch}.{tag}"
    cfg = timm.models.get_pretrained_cfg(arch)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    return hub_id or ""


class TimmFamilyBackbone(TimmBackbone):
    """A timm model chosen by name; the factory `timm_backbone` makes one subclass per model name."""

    family = "timm"  # a family member: one variant, the suite's `variant` does not apply (harness.plan.planner)

    def __init__(self, config):
        if not (config.weights or self.card.weights):
            raise HarnessError(f"backbone '{self.name}': timm publishes no weights for '{self.card.arch}'; "
                               "pass --weights FILE|FOLDER|HUB_ID (or --weights random for a smoke test)")
        super().__init__(config)

    @classmethod
    def _shape_overlay(cls, config) -> dict[str, Any]:
        """The input size of the weights' own `config.json` when they are a local file or folder (never a hub
        lookup here: this runs at planning, dry runs included); else timm's default for the model."""
        spec = config.weights or cls.variants["default"].weights
        if not Path(spec).expanduser().exists():
            return {}
        try:
            return timm_weights_data_cfg(resolve_weights(spec, seed=config.seed).path)
        except HarnessError:  # an unusable file: the planner's weights check names it
            return {}


@functools.cache
def timm_backbone(spec: str) -> type[TimmFamilyBackbone]:
    """The backbone class of `timm:<spec>` (`<model>` or `<model>.<pretrained tag>`); an unknown model is a
    one-line error with close matches."""
    arch, _, tag = spec.partition(".")
    if not timm.is_model(arch):
        raise UnknownNameError("timm model", arch, timm.list_models())
    model, kwargs = _meta_model_and_kwargs(arch)
    dense = hasattr(model, "forward_intermediates")
    levels: tuple[str, ...] = ()
    if dense:
        infos = list(getattr(model, "feature_info", []) or [])[-DENSE_LEVELS:]
        levels = tuple(str(i.get("module", f"level{n}")).replace(".", "_") for n, i in enumerate(infos))
        if len(set(levels)) != len(levels) or not levels:  # no usable feature_info: name the last four
            levels = tuple(f"level{n}" for n in range(DENSE_LEVELS))
    card = VariantCard(name="default", arch=arch, weights=_default_weights(arch, tag),
                       description=f"timm '{arch}'" + (f", pretrained tag '{tag}'" if tag else ""),
                       extra={"feature_kinds": ["global", "dense"] if dense else ["global"],
                              "dense_levels": list(levels)})
    attrs = {"name": f"timm:{spec}", "variants": {"default": card}, "default_variant": "default",
             "feature_kinds": ("global", "dense") if dense else ("global",), "create_kwargs": kwargs,
             "dense_levels": levels, "__module__": __name__}
    return type(f"Timm_{spec.replace('.', '_').replace('-', '_')}", (TimmFamilyBackbone,), attrs)
