"""open_clip CLIP as a frozen feature extractor: projected image embedding (global), multi-depth patch maps
(dense), and the text tower (text features, template-averaged prompt embeddings).

The model is built by open_clip's own factory (`create_model(arch, pretrained=None)`, or
`open_clip.model.CLIP(**model_cfg)` for a card that carries its own config) and then filled strictly from
the file that `harness.data.weights` resolved, so the harness decides where weights come from and fingerprints
them. Preprocessing is open_clip's eval transform for the model (`image_transform_v2` of its
`preprocess_cfg`): resize the shortest side, center-crop, normalise; a non-square image therefore comes out
square. `image_features` also takes tensors of other sizes: the positional embedding is resized the way
open_clip resizes it when a checkpoint is loaded at another `image_size`, so the result is what open_clip
gives for a model created at that size from the same weights.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import open_clip
import torch
from open_clip.model import resize_pos_embed, set_model_preprocess_cfg
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict
from open_clip.transformer import VisionTransformer
from open_clip.zero_shot_classifier import build_zero_shot_classifier

from backbones.cards import CLIP
from backbones.common import (
    check_kinds,
    compute_context,
    dense_block_indices,
    freeze,
    identity_fingerprint,
    load_strict,
    torch_dtype,
    weights_dtype,
)
from harness.api import Backbone, Features, FeatureShapes
from harness.catalog import register_backbone
from harness.data.weights import ResolvedWeights, load_state_dict, resolve_weights
from harness.numerics import seeded_init, to_float32

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from harness.config import BackboneConfig

# open_clip's own file names (its hub layout): a timm/*.openai repo also holds a timm-format model.safetensors,
# which must not be picked for an open_clip model.
OPEN_CLIP_FILENAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
OPEN_CLIP_CONFIG = "open_clip_config.json"
RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")
_MAX_RESIZED = 8  # vision towers kept for non-native input sizes



def _weights_config(path: Path | None) -> dict[str, Any]:
    """The `open_clip_config.json` beside the weights (model_cfg, preprocess_cfg), as open_clip's hf-hub path reads."""
    cfg_path = path.parent / OPEN_CLIP_CONFIG if path is not None else None
    if cfg_path is None or not cfg_path.is_file():
        return {}
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _model_from_cfg(model_cfg: dict[str, Any]) -> torch.nn.Module:
    """open_clip's model class for a config, picked as its `create_model` picks it: CoCa or CustomTextCLIP for a
    custom (or Hugging Face) text tower, else CLIP; an HF text tower is built empty (the weights fill it)."""
    cfg = copy.deepcopy(model_cfg)
    hf_text = "hf_model_name" in cfg.get("text_cfg", {})
    if hf_text:
        cfg["text_cfg"]["hf_model_pretrained"] = False
    if cfg.pop("custom_text", False) or hf_text:
        return (open_clip.CoCa if "multimodal_cfg" in cfg else open_clip.CustomTextCLIP)(**cfg)
    return open_clip.model.CLIP(**cfg)


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """open_clip warns on the root logger that the model is randomly initialised: we load the weights next."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _resized_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A [1 + h*w, C] class+grid embedding resized to `grid` by open_clip's own checkpoint resizer."""
    state = {"visual.positional_embedding": pos_embed.detach()}
    resize_pos_embed(state, types.SimpleNamespace(visual=types.SimpleNamespace(grid_size=grid)))
    return state["visual.positional_embedding"]


def _with_parameter(module: torch.nn.Module, name: str, value: torch.Tensor) -> torch.nn.Module:
    """A shallow copy of `module` (submodules shared) whose parameter `name` is `value`."""
    clone = copy.copy(module)
    clone._parameters = dict(module._parameters)
    clone._parameters[name] = torch.nn.Parameter(value, requires_grad=False)
    return clone


@register_backbone("clip")
class CLIPBackbone(Backbone):
    """An open_clip CLIP (image and text towers) in eval mode, gradients off."""

    name = "clip"
    variants = CLIP
    default_variant = "vit-b-16"
    feature_kinds = ("global", "dense")  # image kinds; the text tower is `text_features` / `prompt_embeddings`
    weight_filenames = OPEN_CLIP_FILENAMES  # timm/*.openai repos also hold a timm-format model.safetensors

    def __init__(self, config: BackboneConfig):
        super().__init__(config)
        torch_dtype(config.dtype)  # validates the name before any work
        self.device = torch.device(config.device)
        self.weights: ResolvedWeights = resolve_weights(config.weights or self.card.weights, seed=config.seed,
                                                        filenames=self.weight_filenames)
        weights_cfg = _weights_config(self.weights.path)
        self.quick_gelu = self._quick_gelu(weights_cfg)
        # Preprocessing: open_clip's defaults < the pretrained tag's cfg < the weights' config < the card's overlay.
        pp_overlay = merge_preprocess_dict(self._tag_cfg(), weights_cfg.get("preprocess_cfg") or {})
        pp_overlay = merge_preprocess_dict(pp_overlay, self.card.extra.get("preprocess_cfg", {}))
        with seeded_init(config.seed, portable=self.weights.path is None), _quiet_logging():  # caller's RNG untouched
            model = self._build(pp_overlay)
        if self.weights.path is not None:
            self._load(model, self.weights.path)
        self.model = freeze(model, self.device, config.dtype)
        self.preprocess_cfg: dict[str, Any] = dict(model.visual.preprocess_cfg)
        self._transform = image_transform_v2(PreprocessCfg(**self.preprocess_cfg), is_train=False)
        self.tokenizer = self._tokenizer()
        self.is_vit = isinstance(model.visual, VisionTransformer)
        self.dense_levels: tuple[str, ...] = ()
        if self.is_vit:
            self.patch_size: tuple[int, int] = tuple(model.visual.patch_size)
            self._dense_indices = dense_block_indices(len(model.visual.transformer.resblocks))
            self.dense_levels = tuple(f"block{i + 1}" for i in self._dense_indices)
        elif isinstance(model.visual, ModifiedResNet):  # index 0 is the stem
            self._dense_indices = [1, 2, 3, 4]
            self.dense_levels = RESNET_STAGES
        else:  # another open_clip tower (timm trunk, ...): its projected embedding only, at its native size
            self.feature_kinds = ("global",)
        self._resized: dict[tuple[int, int], torch.nn.Module] = {}

    @classmethod
    def feature_shapes(cls, config: BackboneConfig) -> FeatureShapes | None:
        """From the open_clip model config (the card's own, or open_clip's for the arch) and the input size
        open_clip's eval transform gives (the tower's image size unless the card's `preprocess_cfg` says):
        `global` = the projected embedding; ViT: patch maps [width, H/p, W/p] at `dense_block_indices`;
        ModifiedResNet: layer1..4 (a stride-2 conv, ceil, then floor halvings by average pooling)."""
        model_cfg, size = cls._shape_source(config)
        if not model_cfg:
            return None
        vision = model_cfg["vision_cfg"]
        size = size or vision["image_size"]
        height, width = (size, size) if isinstance(size, int) else size
        shapes: FeatureShapes = {"global": {"global": (int(model_cfg["embed_dim"]),)}}
        layers = vision.get("layers")
        if vision.get("timm_model_name"):
            return shapes  # a timm trunk: its projected embedding only (see __init__)
        if isinstance(layers, (list, tuple)):
            h, w = (height + 1) // 2 // 2, (width + 1) // 2 // 2
            dense = {}
            for i, stage in enumerate(RESNET_STAGES):
                dense[stage] = (int(vision.get("width", 64)) * 4 * 2 ** i, h, w)
                h, w = h // 2, w // 2
            shapes["dense"] = dense
        else:
            patch = int(vision["patch_size"])
            shapes["dense"] = {f"block{i + 1}": (int(vision["width"]), height // patch, width // patch)
                               for i in dense_block_indices(int(layers))}
        return shapes

    @classmethod
    def _shape_source(cls, config: BackboneConfig) -> tuple[dict[str, Any] | None, Any]:
        """The model config and input size (None: the tower's) `feature_shapes` reads, from the card alone."""
        card = cls.variants[config.variant or cls.default_variant]
        model_cfg = card.extra.get("model_cfg") or open_clip.get_model_config(card.arch)
        return model_cfg, card.extra.get("preprocess_cfg", {}).get("size")

    # -- building ----------------------------------------------------------------------------------------
    def _model_cfg(self) -> dict[str, Any] | None:
        """The open_clip model config to build from (a card's own), or None for open_clip's config of the arch."""
        return self.card.extra.get("model_cfg")

    def _tag_cfg(self) -> dict[str, Any]:
        """open_clip's registry entry for the card's pretrained tag (quick_gelu, mean/std, ...), or {}."""
        tag = self.card.extra.get("pretrained_tag")
        return dict(open_clip.get_pretrained_cfg(self.card.arch, tag) or {}) if tag else {}

    def _quick_gelu(self, weights_cfg: dict[str, Any]) -> bool:
        """OpenAI weights need QuickGELU, which the plain arch config lacks (open_clip keeps it in the tag).

        The card's own weights: the tag says. Other weights: their open_clip_config.json's full model config
        says (absent = GELU); a bare file: the tag, else the card's config.
        """
        tag_cfg = self._tag_cfg()
        default_weights = (self.config.weights or self.card.weights) == self.card.weights
        model_cfg = weights_cfg.get("model_cfg")
        if tag_cfg and default_weights:
            return bool(tag_cfg.get("quick_gelu", False))
        if isinstance(model_cfg, dict):
            return bool(model_cfg.get("quick_gelu", False))
        if tag_cfg:
            return bool(tag_cfg.get("quick_gelu", False))
        return bool(self.card.extra.get("model_cfg", {}).get("quick_gelu", False))

    def _build(self, pp_overlay: dict[str, Any]) -> torch.nn.Module:
        """open_clip's factory for a named arch; `CLIP(**model_cfg)` plus the same preprocess cfg for a custom one."""
        model_cfg = self._model_cfg()
        if model_cfg is None:
            return open_clip.create_model(self.card.arch, pretrained=None, force_quick_gelu=self.quick_gelu,
                                          force_preprocess_cfg=pp_overlay or None)
        model = _model_from_cfg({**model_cfg, "quick_gelu": self.quick_gelu})
        # As create_model does: defaults, the tower's image size, then the overrides.
        pp = merge_preprocess_dict(PreprocessCfg(), {"size": model.visual.image_size})
        set_model_preprocess_cfg(model, merge_preprocess_dict(pp, pp_overlay))
        return model

    @staticmethod
    def _load(model: torch.nn.Module, path: Path) -> None:
        """Strict load of an open_clip state dict (a training checkpoint's `state_dict` is unwrapped)."""
        state = load_state_dict(path)
        if isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if state and next(iter(state)).startswith("module."):
            state = {k.removeprefix("module."): v for k, v in state.items()}
        load_strict(model, state, path)

    def _tokenizer(self) -> Callable[[Sequence[str]], torch.Tensor]:
        """open_clip's tokenizer for the arch; a custom config gets its BPE tokenizer at the model's context length."""
        if self._model_cfg() is not None:
            return open_clip.SimpleTokenizer(context_length=self.model.context_length)
        return open_clip.get_tokenizer(self.card.arch, context_length=self.model.context_length)

    # -- the Backbone interface ----------------------------------------------------------------------------
    # `param_count` counts both towers (what the weights file holds); `card.extra["params_visual"]` is the image's.

    @property
    def input_size(self) -> tuple[int, int, int]:
        return PreprocessCfg(**self.preprocess_cfg).input_size

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> [B, 3, S, S] on the CPU (open_clip's eval transform: resize shortest side, crop, normalise)."""
        return torch.stack([self._transform(im) for im in images])

    def _visual_for(self, height: int, width: int) -> torch.nn.Module:
        """The vision tower for an input size: the model's own at its native size, else one with a resized
        positional embedding (ViT grid; ResNet attention-pool grid), cached per size."""
        visual = self.model.visual
        if not self.dense_levels:
            return visual
        if self.is_vit:
            grid = (height // self.patch_size[0], width // self.patch_size[1])
            native = tuple(visual.grid_size)
        else:  # the attention pool's grid: a stride-2 padded conv (ceil), then four floor-halvings
            grid = ((height + 1) // 2 // 16, (width + 1) // 2 // 16)
            side = visual.attnpool.positional_embedding.shape[0] - 1
            native = (round(side ** 0.5),) * 2
        if grid == native:
            return visual
        if grid not in self._resized:
            if len(self._resized) >= _MAX_RESIZED:
                self._resized.pop(next(iter(self._resized)))
            with torch.inference_mode(False), torch.no_grad():  # a plain tensor, usable in and out of inference
                if self.is_vit:
                    resized = _with_parameter(visual, "positional_embedding",
                                              _resized_pos_embed(visual.positional_embedding, grid))
                else:
                    pool = _with_parameter(visual.attnpool, "positional_embedding",
                                           _resized_pos_embed(visual.attnpool.positional_embedding, grid))
                    resized = copy.copy(visual)
                    resized._modules = dict(visual._modules)
                    resized._modules["attnpool"] = pool
            self._resized[grid] = resized
        return self._resized[grid]

    def image_features(self, batch: torch.Tensor, kinds: Sequence[str] = ("global",)) -> Features:
        """One forward pass for any mix of kinds; features come back as fp32 whatever the compute dtype.

        global: `model.encode_image(x)`, the projected embedding, not L2-normalised.
        dense: ViT: patch tokens after blocks `dense_levels` (1-based), through the tower's final LayerNorm
        (`normalize_intermediates`, so levels share a scale), class token dropped, as [B, width, H/p, W/p];
        ResNet: the four stage outputs `layer1..layer4` (strides 4..32).
        """
        check_kinds(self.name, kinds, self.feature_kinds)
        with compute_context(self.device, self.config.dtype):
            x = batch.to(self.device, weights_dtype(self.config.dtype), non_blocking=True)
            visual = self._visual_for(*x.shape[-2:])
            out = Features()
            if "dense" in kinds:
                res = visual.forward_intermediates(x, indices=self._dense_indices, normalize_intermediates=True,
                                                   intermediates_only="global" not in kinds, output_fmt="NCHW")
                out.dense = {name: to_float32(m) for name, m in
                             zip(self.dense_levels, res["image_intermediates"], strict=True)}
                if "global" in kinds:
                    out.global_ = to_float32(res["image_features"])
            elif "global" in kinds:
                out.global_ = to_float32(self.model.encode_image(x) if visual is self.model.visual else visual(x))
        return out

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """`model.encode_text(tokenizer(texts))` -> [N, D] fp32 on the CPU, not L2-normalised."""
        chunks = []
        with compute_context(self.device, self.config.dtype):
            for start in range(0, len(texts), 256):
                tokens = self.tokenizer(list(texts[start:start + 256])).to(self.device)
                chunks.append(to_float32(self.model.encode_text(tokens)).cpu())
        if not chunks:
            return torch.empty(0, self.model.visual.output_dim)
        return torch.cat(chunks)

    def prompt_embeddings(self, classnames: Sequence[str], templates: Sequence[str | Callable[[str], str]]
                          ) -> torch.Tensor:
        """CLIP's zero-shot recipe (open_clip's `build_zero_shot_classifier`): per class, the mean of the
        L2-normalised embeddings of every template (`"a photo of a {}."` or a callable), L2-normalised
        -> [C, D] fp32 on the CPU."""
        per_batch = max(1, 256 // max(1, len(templates)))
        with compute_context(self.device, self.config.dtype):
            weights = build_zero_shot_classifier(self.model, self.tokenizer, list(classnames), list(templates),
                                                 num_classes_per_batch=per_batch, device=self.device)
        return to_float32(weights.T).cpu().contiguous()

    def fingerprint(self) -> dict[str, Any]:
        fp = {**identity_fingerprint(self, self.weights, self.input_size, self.preprocess_cfg),
              "quick_gelu": self.quick_gelu, "dtype": self.config.dtype}
        if self._model_cfg() is not None:
            fp["model_cfg"] = self._model_cfg()
        return fp
