"""`hf:<hub id or local folder>`: any transformers vision encoder as a backbone, with no code.

The config comes from the folder (or the HF cache's copy of the hub id): `AutoConfig`, then `AutoModel` and
`AutoImageProcessor`, `trust_remote_code` never. `--weights` defaults to that same id or folder and goes
through the harness's resolver (HF cache, local folder, `random`), which fingerprints the weights file; the
model is then loaded with `from_pretrained` from the resolved folder, offline. `random` builds it from the
config with a seeded init. ViT, DINOv2, SigLIP / CLIP vision towers, ConvNeXt, Swin and the like work.

global: the model's pooled output where it gives one (`pooler_output`: DINOv2's normed class token, CLIP's
post-layernorm class token, SigLIP's attention pool, ConvNeXt's and Swin's pooled maps; ViT's trained
pooler), else the class token of the last hidden state. A full CLIP / SigLIP model (text tower included) gives
its projected image embedding (`get_image_features`).
dense (one map, `last`): the last hidden state as [B, D, h, w]: taken as is from a convolutional model,
reshaped from the patch tokens (prefix tokens dropped) for a plain patch model; hierarchical transformers
(Swin) and models of other shapes are global-only, and a task that needs dense maps is refused at planning.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from backbones.common import check_kinds, compute_context, freeze, torch_dtype, weights_dtype
from harness.api import Backbone, Features, VariantCard
from harness.data.weights import ResolvedWeights, resolve_weights
from harness.errors import HarnessError, WeightsMissingError
from harness.numerics import seeded_init, to_float32

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from harness.config import BackboneConfig

HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")
CONV_MODEL_TYPES = ("convnext", "convnextv2", "resnet", "regnet", "bit")  # last_hidden_state is [B, C, h, w]


def _config(source: str):
    """The model config of a folder or a cached hub id, offline; a one-line error naming how to get it."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        where = "the folder" if Path(source).expanduser().exists() else "the HF cache (HF_HUB_CACHE / HF_HOME)"
        raise WeightsMissingError(
            f"hf:{source}: no usable config.json in {where} ({type(exc).__name__}); get it with "
            f"`hf download {source}` where there is network, or give a folder saved with save_pretrained",
            weights=source, looked_in=where, fetch=f"hf download {source}") from None


def _dense_rule(config) -> str | None:
    """'maps' (a CNN: the last hidden state is [B, C, h, w]), 'tokens' (a plain patch model), or None."""
    vision = getattr(config, "vision_config", None) or config
    if getattr(vision, "model_type", "") in CONV_MODEL_TYPES:
        return "maps"
    if getattr(vision, "patch_size", None) and not getattr(vision, "depths", None):  # Swin has depths
        return "tokens"
    return None


class HFBackbone(Backbone):
    """A transformers vision encoder chosen by hub id or folder; `hf_backbone` makes one subclass per source."""

    family = "hf"  # a family member: one variant, the suite's `variant` does not apply (harness.plan.planner)
    source: str = ""
    dense_rule: str | None = None

    def __init__(self, config: BackboneConfig):
        from transformers import AutoImageProcessor, AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars would interleave with the run's own progress
        super().__init__(config)
        torch_dtype(config.dtype)
        self.device = torch.device(config.device)
        self.weights: ResolvedWeights = resolve_weights(config.weights or self.card.weights, seed=config.seed,
                                                        filenames=HF_FILENAMES)
        folder = self.weights.path.parent if self.weights.path is not None else None
        model_config = _config(str(folder) if folder is not None else self.source)
        if folder is None:
            with seeded_init(config.seed, portable=True):
                model = AutoModel.from_config(model_config, trust_remote_code=False)
        else:
            model = AutoModel.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        self.model = freeze(model, self.device, config.dtype)
        processor_source = folder if folder is not None and (folder / "preprocessor_config.json").is_file() \
            else self.source
        try:
            self.processor = AutoImageProcessor.from_pretrained(processor_source, local_files_only=True,
                                                                trust_remote_code=False)
        except (OSError, ValueError):
            raise HarnessError(f"backbone '{self.name}': no preprocessor_config.json in {processor_source}; save the "
                               "model's image processor beside it (processor.save_pretrained)") from None
        self._interpolate = "interpolate_pos_encoding" in inspect.signature(self._vision_forward()).parameters

    def _vision_forward(self):
        return getattr(self.model, "vision_model", self.model).forward

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        return self.processor(images=rgb, return_tensors="pt")["pixel_values"].float()

    def _outputs(self, x: torch.Tensor):
        kwargs = {"interpolate_pos_encoding": True} if self._interpolate else {}
        if hasattr(self.model, "vision_model"):  # a full CLIP / SigLIP model: its vision tower
            return self.model.vision_model(pixel_values=x, **kwargs)
        return self.model(pixel_values=x, **kwargs)

    def _global(self, out) -> torch.Tensor:
        """From the one forward pass: a full CLIP model's projection of its pooled output (what
        `get_image_features` computes, without a second pass), else the pooled output, else the class token."""
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            return out.last_hidden_state[:, 0]
        projection = getattr(self.model, "visual_projection", None) if hasattr(self.model, "vision_model") else None
        return projection(pooled) if projection is not None else pooled.flatten(1)

    def _dense(self, x: torch.Tensor, out) -> torch.Tensor:
        hidden = out.last_hidden_state
        if self.dense_rule == "maps":
            return hidden
        vision = getattr(self.model.config, "vision_config", None) or self.model.config
        p = vision.patch_size if isinstance(vision.patch_size, int) else vision.patch_size[0]
        h, w = x.shape[-2] // p, x.shape[-1] // p
        tokens = hidden[:, hidden.shape[1] - h * w:]  # prefix tokens (class, registers) dropped
        return tokens.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[2], h, w)

    def image_features(self, batch: torch.Tensor, kinds: Sequence[str] = ("global",)) -> Features:
        check_kinds(self.name, kinds, self.feature_kinds)
        with compute_context(self.device, self.config.dtype):
            x = batch.to(self.device, weights_dtype(self.config.dtype))
            out = self._outputs(x)
            features = Features()
            if "global" in kinds:
                features.global_ = to_float32(self._global(out))
            if "dense" in kinds:
                features.dense = {"last": to_float32(self._dense(x, out))}
        return features

    def fingerprint(self) -> dict[str, Any]:
        return {"backbone": self.name, "variant": self.card.name, "arch": self.card.arch,
                "weights": self.weights.fingerprint, "weights_kind": self.weights.kind, "dtype": self.config.dtype,
                "model_type": self.model.config.model_type,
                "processor": self.processor.to_dict() if hasattr(self.processor, "to_dict") else {}}

    @classmethod
    def weights_fingerprint(cls, config: BackboneConfig) -> str:
        return resolve_weights(config.weights or cls.variants["default"].weights, seed=config.seed,
                               filenames=HF_FILENAMES).fingerprint


@functools.cache
def hf_backbone(source: str) -> type[HFBackbone]:
    """The backbone class of `hf:<source>` (a hub id in the HF cache, or a folder saved with save_pretrained)."""
    config = _config(source)
    rule = _dense_rule(config)
    kinds = ("global", "dense") if rule else ("global",)
    card = VariantCard(name="default", arch=source, weights=source,
                       description=f"transformers {config.model_type} from {source}",
                       extra={"feature_kinds": list(kinds), "dense_levels": ["last"] if rule else []})
    attrs = {"name": f"hf:{source}", "variants": {"default": card}, "default_variant": "default",
             "feature_kinds": kinds, "source": source, "dense_rule": rule, "__module__": __name__}
    return type(f"HF_{config.model_type}", (HFBackbone,), attrs)
