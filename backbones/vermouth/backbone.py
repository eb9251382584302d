"""The harness backbone: frozen SD (+ BLIP prompts, + expert trunk) features and the trainable Vermouth neck.

`dense` = the selected levels "L0".."L3" (+ the expert's frozen taps "expert_*"); `global` = the
concatenated global-average-pooled selected levels (the untrained "pooled levels" embedding), so a linear
probe reads Vermouth like any backbone; `neck()` / `dense_neck()` give the method's trainable U-head
(+ expert adapters) over `dense`. Feature options (t, noise, stages, prompt, ...) come from the variant
card, then from `config.options` when the config has that field, then from constructor keywords.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from backbones.common import check_kinds, compute_context, freeze, square_crop_pixels, torch_dtype, weights_dtype
from backbones.vermouth.cards import VERMOUTH
from backbones.vermouth.components import (
    SDParts,
    build_blip,
    build_sd,
    load_blip,
    load_sd,
    resolve_captioner,
    resolve_pipeline,
)
from backbones.vermouth.diffusion import DiffusionFeatures, image_id
from backbones.vermouth.expert import ExpertFusion, ExpertTrunk, fusion_mode
from backbones.vermouth.neck import VermouthNeck
from backbones.vermouth.options import VermouthOptions, resolve_options
from backbones.vermouth.prompts import BlipCaptioner, PromptSource, TextEncoder
from backbones.vermouth.shapes import feature_shapes as vermouth_shapes
from backbones.vermouth.uhead import DenseUHead, UHead
from harness.api import Backbone, Features, FeatureShapes
from harness.catalog import register_backbone
from harness.data.cache import FeatureCache
from harness.data.weights import ResolvedWeights, resolve_weights
from harness.numerics import seeded_init, to_float32
from harness.paths import cache_root

if TYPE_CHECKING:  # pragma: no cover
    from harness.config import BackboneConfig

FEATURE_VERSION = 2  # bump when the extraction changes numerically (2: ε drawn in float64); part of the fingerprint
LATENT_VERSION = 1  # bump when the VAE encoding changes numerically: it names the latent cache namespace


def _options(cls: type[VermouthBackbone], config: BackboneConfig, overrides: dict[str, Any]) -> VermouthOptions:
    card = cls.variants[config.variant or cls.default_variant]
    return resolve_options(card, {**(getattr(config, "options", None) or {}), **overrides})


def _captioner_spec(opts: VermouthOptions, pipeline: ResolvedWeights) -> str:
    """An explicit `captioner` option wins; else `<pipeline folder>/blip` if present; else the card's."""
    if opts.captioner is not None:
        return opts.captioner
    if pipeline.path is not None and (pipeline.path / "blip" / "config.json").is_file():
        return str(pipeline.path / "blip")
    return opts.default_captioner


def _weights_id(pipeline: ResolvedWeights, expert: ResolvedWeights | None,
                captioner: ResolvedWeights | None) -> str:
    """Every set of weights the features depend on, in one string."""
    parts = [pipeline.fingerprint]
    if expert is not None:
        parts.append(f"expert={expert.fingerprint}")
    if captioner is not None:
        parts.append(f"captioner={captioner.fingerprint}")
    return "|".join(parts)


@register_backbone("vermouth")
class VermouthBackbone(Backbone):
    """Stable Diffusion UNet levels as frozen features; U-head + adapted expert as the trainable neck."""

    name = "vermouth"
    variants = VERMOUTH
    default_variant = "sd15"
    feature_kinds = ("global", "dense")

    def __init__(self, config: BackboneConfig, **overrides: Any):
        super().__init__(config)
        torch_dtype(config.dtype)  # validates the name before any work
        self.options = _options(type(self), config, overrides)
        opts = self.options
        self.device = torch.device(config.device)
        self.weights: ResolvedWeights = resolve_pipeline(config.weights or self.card.weights, config.seed,
                                                         self.card.arch)
        if self.weights.path is None:
            parts = build_sd(self.card.arch, config.seed)
        else:
            parts = load_sd(self.weights.path)
        for module in parts.modules().values():
            freeze(module, self.device, config.dtype)
        self.parts: SDParts = parts
        self.diffusion = DiffusionFeatures(parts.unet, parts.vae, parts.scheduler, t=opts.t, noise=opts.noise,
                                           stages=opts.stages, seed=config.seed,
                                           cross_attention=opts.cross_attention,
                                           cross_attention_l3=opts.cross_attention_l3, early_exit=opts.early_exit)
        self.text = TextEncoder(parts.tokenizer, parts.text_encoder, self.device)
        self.captioner: BlipCaptioner | None = None
        self.captioner_weights: ResolvedWeights | None = None
        if opts.prompt == "blip":
            self.captioner = self._captioner()
        self.prompts = PromptSource(opts.prompt, self.text, self.captioner)
        self.expert: ExpertTrunk | None = None
        if opts.expert != "none":
            self.expert = ExpertTrunk(opts.expert, opts.experts[opts.expert], seed=config.seed, device=self.device,
                                      levels=opts.stages, dtype=config.dtype)
        # VAE latents depend on the pipeline weights, the dtype and the preprocessed pixels only, not on t,
        # noise, stages or prompt: a sweep over those encodes each image once. `None` turns it off (profiling).
        self.latent_cache: FeatureCache | None = FeatureCache(
            {"backbone": self.name, "arch": self.card.arch, "weights": self.weights.fingerprint,
             "dtype": config.dtype, "latent_version": LATENT_VERSION}, "vae-latent", root=cache_root() / "latents")
        self.channels_last = False
        self.set_channels_last(self.device.type == "cuda")

    def set_channels_last(self, enabled: bool) -> None:
        """NHWC memory format for the VAE and UNet weights and the input batch: on by default on CUDA (tensor
        cores under autocast), off on the CPU. Same numbers within float tolerance, only the layout changes.
        (The UNet's input is channels-last either way, see `DiffusionFeatures.levels_from_latents`.)"""
        fmt = torch.channels_last if enabled else torch.contiguous_format
        for module in (self.parts.unet, self.parts.vae):
            module.to(memory_format=fmt)
        self.channels_last = enabled

    def _captioner(self) -> BlipCaptioner:
        opts = self.options
        spec = _captioner_spec(opts, self.weights)
        self.captioner_weights = weights = resolve_captioner(spec, self.config.seed, self.card.arch)
        arch, seed = self.card.arch, self.config.seed

        def load() -> tuple[Any, Any]:
            return build_blip(arch, seed) if weights.path is None else load_blip(weights.path)

        return BlipCaptioner(load, weights.fingerprint, self.device, prefix=opts.caption_prefix,
                             max_length=opts.caption_max_length, min_length=opts.caption_min_length)

    # -- identity ------------------------------------------------------------------------------------------
    @classmethod
    def validate_options(cls, config: BackboneConfig) -> None:
        """Unknown or bad feature options are a ConfigError naming the key, before any work."""
        _options(cls, config, {})

    @classmethod
    def feature_shapes(cls, config: BackboneConfig) -> FeatureShapes:
        """Levels (and expert taps) from the card's component configs and the options; no weights needed."""
        card = cls.variants[config.variant or cls.default_variant]
        return vermouth_shapes(card.arch, _options(cls, config, {}))

    @classmethod
    def has_neck(cls, config: BackboneConfig) -> bool:
        return True  # the U-head (+ expert adapters), always

    @classmethod
    def weights_fingerprint(cls, config: BackboneConfig) -> str:
        """Pipeline weights (+ expert, + captioner when used) without building anything (for job keys)."""
        card = cls.variants[config.variant or cls.default_variant]
        opts = _options(cls, config, {})
        pipeline = resolve_pipeline(config.weights or card.weights, config.seed, card.arch)
        expert = resolve_weights(opts.experts[opts.expert].weights, seed=config.seed) if opts.expert != "none" else None
        captioner = (resolve_captioner(_captioner_spec(opts, pipeline), config.seed, card.arch)
                     if opts.prompt == "blip" else None)
        return _weights_id(pipeline, expert, captioner)

    def fingerprint(self) -> dict[str, Any]:
        fp: dict[str, Any] = {
            "backbone": self.name,
            "variant": self.card.name,
            "arch": self.card.arch,
            "weights": _weights_id(self.weights, self.expert.weights if self.expert else None,
                                   self.captioner_weights),
            "weights_kind": self.weights.kind,
            "dtype": self.config.dtype,
            "noise_seed": self.config.seed,
            "feature_version": FEATURE_VERSION,
            **self.options.feature_config(),
        }
        if self.captioner is not None:
            fp["captioner"] = self.captioner.fingerprint
        return fp

    @property
    def param_count(self) -> int:
        n = sum(p.numel() for m in self.parts.modules().values() for p in m.parameters())
        return n + (self.expert.param_count if self.expert is not None else 0)

    # -- features ------------------------------------------------------------------------------------------
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Short side → resolution (bicubic), center crop, [-1, 1] (mean = std = 0.5), as the method's tasks."""
        return torch.stack([square_crop_pixels(im, self.options.resolution) / 127.5 - 1.0 for im in images])

    def image_features(self, batch: torch.Tensor, kinds: Sequence[str] = ("global",)) -> Features:
        """One VAE + text + UNet pass for any mix of kinds; fp32 on the CPU whatever the compute dtype."""
        check_kinds(self.name, kinds, self.feature_kinds)
        identities = [image_id(im) for im in batch]
        with compute_context(self.device, self.config.dtype):
            x = self._to_device(batch)
            context = self.prompts.context(x, identities)
            levels = self.diffusion.levels_from_latents(self._latents(x, identities), context, identities)
            out = Features()
            if "global" in kinds:
                # Pooled in the compute precision (at least fp32), then cast: a float32 mean of fp64 maps would
                # reintroduce the vector kernels' summation order that fp64 is there to round away.
                out.global_ = to_float32(torch.cat([v.to(torch.promote_types(v.dtype, torch.float32)).mean(dim=(2, 3))
                                                    for v in levels.values()], dim=1)).cpu()
            if "dense" in kinds:
                dense = dict(levels)
                if self.expert is not None:
                    dense.update(self.expert(x, {k: tuple(v.shape[-2:]) for k, v in levels.items()}))
                out.dense = {k: to_float32(v).cpu() for k, v in dense.items()}
        return out

    def _to_device(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device, weights_dtype(self.config.dtype), non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _latents(self, x: torch.Tensor, identities: Sequence[str]) -> torch.Tensor:
        """Clean latents of a batch: cached ones read back (same dtype and values), the rest encoded together
        in one VAE pass and stored. A corrupt entry is a miss (the cache verifies its checksum)."""
        if self.latent_cache is None:
            return self.diffusion.latents(x)
        found = self.latent_cache.fetch(identities, lambda miss: self.diffusion.latents(
            x if len(miss) == len(identities) else x[miss]))
        return torch.stack([z.to(self.device) for z in found])

    def stage_times(self, batch: torch.Tensor) -> dict[str, float]:
        """Seconds per stage for one pass over `batch`, the same work as `image_features` stage by stage.

        Stages: `vae` (encode), `caption` (prompt=blip only; the caption cache is used as in
        `image_features`, so a seen image costs a cache read), `text_encoder`, `unet` (noising + the UNet
        up to its early exit), `expert` (when enabled), `uhead` (a freshly built neck's forward on the dense
        output; built outside the timing). Device-synchronised on CUDA.
        """
        import time

        cuda = self.device.type == "cuda"

        def now() -> float:
            if cuda:
                torch.cuda.synchronize(self.device)
            return time.perf_counter()

        times: dict[str, float] = {}
        identities = [image_id(im) for im in batch]
        neck = self.neck().to(self.device).eval()
        with compute_context(self.device, self.config.dtype):
            x = self._to_device(batch)
            start = now()
            z0 = self.diffusion.latents(x)  # always encoded: this times the VAE, not a latent-cache read
            times["vae"] = now() - start
            if self.options.prompt == "blip":
                start = now()
                prompts = self.prompts.prompts(x, identities)
                times["caption"] = now() - start
            else:
                prompts = self.prompts.prompts(x, identities)
            start = now()
            context = self.text.encode(prompts, memo=self.prompts.kind != "blip")
            times["text_encoder"] = now() - start
            start = now()
            levels = self.diffusion.levels_from_latents(z0, context, identities)
            times["unet"] = now() - start
            dense = dict(levels)
            if self.expert is not None:
                start = now()
                dense.update(self.expert(x, {k: tuple(v.shape[-2:]) for k, v in levels.items()}))
                times["expert"] = now() - start
            start = now()
            neck(dense)
            times["uhead"] = now() - start
        return times

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """The SD text encoder's pooled EOT state (CLIP-L's unprojected output for SD 1.x), [N, D] fp32."""
        with compute_context(self.device, self.config.dtype):
            return to_float32(self.text.pooled(list(texts))).cpu()

    # -- trainable neck ------------------------------------------------------------------------------------
    def dense_channels(self) -> dict[str, int]:
        """Channels of every `dense` entry, without a forward pass."""
        tokens = self.text.length
        channels: dict[str, int] = dict(self.diffusion.channels(tokens))
        if self.expert is not None:
            channels.update(self.expert.channels())
        return channels

    def _fusion(self) -> tuple[dict[str, int], ExpertFusion | None]:
        channels = self.dense_channels()
        level_in = {k: channels[k] for k in self.options.stages}
        if self.expert is None:
            return level_in, None
        fusion = ExpertFusion({k: channels[k] for k in self.expert.taps}, self.expert.levels(),
                              fusion_mode(self.expert.kind, self.options.expert_fusion))
        for level, extra in fusion.extra_channels().items():
            level_in[level] += extra
        return level_in, fusion

    def _seeded_neck(self, seed: int | None, make_head: Any) -> VermouthNeck:
        """`make_head(level_in)` wrapped with the stages and adapters, initialised under `seed` (default: the
        config's) without disturbing the caller's RNG."""
        with seeded_init(self.config.seed if seed is None else seed):
            level_in, fusion = self._fusion()
            neck = VermouthNeck(self.options.stages, make_head(level_in), fusion)
        return neck.float()

    def neck(self, seed: int | None = None) -> VermouthNeck:
        """A fresh U-head (+ adapters): dense dict → L2-normalised [B, embed_dim]; seeded init."""
        u = self.options.uhead
        return self._seeded_neck(seed, lambda level_in: UHead(level_in, u.widths, u.groups, u.heads, u.embed_dim,
                                                              u.pool_size))

    def dense_neck(self, seed: int | None = None) -> VermouthNeck:
        """A fresh OVSS head (+ adapters): dense dict → per-pixel L2-normalised [B, embed_dim, H, W]."""
        d = self.options.dense_head
        return self._seeded_neck(seed, lambda level_in: DenseUHead(level_in, d.widths, d.fpn_channels, d.groups,
                                                                   d.embed_dim, d.dropout))

    @property
    def embed_dim(self) -> int:
        return self.options.uhead.embed_dim

