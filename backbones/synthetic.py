"""SYNTHETIC (load tests only): the real feature shapes of big backbones at negligible compute.

Why: the harness's memory and throughput (feature cache, stores, heads, OVSS windows) must be testable at the
scale of Vermouth sd15 (22.6 MB of dense features per image), CLIP ViT-L/14 or ResNet-50 on a CPU, without
their compute. The variants (`backbones.cards.SYNTHETIC`) give those backbones' level names and shapes; the
values are a fixed, seeded, cheap function of the image, so they carry real image signal and a head can
learn from them. Registered with `in_all=False`: never part of `--backbone all`, and every leaderboard row
and fingerprint says `synthetic`.

Each level: the preprocessed image on a 2^-8 grid → per cell (adaptive average pooling to the level's grid)
the mean of each channel and of its square, back on the 2^-8 grid → a seeded 1×1 projection to the level's
channels (weights and bias on a 2^-6 grid) → ReLU. Every product and partial sum of the projection is then
exactly representable in float32 (and float64), so whatever the summation order the BLAS picks (batch size,
position in the batch, threads, fp32 or fp64) the result is the same bits; pooling and global averages run
in float64, where their sums are exact too. No per-image random draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from backbones.cards import SYNTHETIC, SYNTHETIC_STATS
from backbones.common import (
    check_kinds,
    compute_context,
    freeze,
    identity_fingerprint,
    square_crop_pixels,
    torch_dtype,
)
from harness.api import Backbone, Features
from harness.catalog import register_backbone
from harness.data.weights import ResolvedWeights, resolve_weights
from harness.errors import ConfigError, HarnessError
from harness.numerics import seeded_init, to_float32

if TYPE_CHECKING:  # pragma: no cover
    from harness.config import BackboneConfig

FEATURE_VERSION = 1  # bump when the feature function changes numerically; part of the fingerprint
MEAN = (0.485, 0.456, 0.406)  # ImageNet's, a fixed normalisation (no real model behind it)
STD = (0.229, 0.224, 0.225)
INPUT_STEP = 2.0 ** -8  # grid of the inputs and of the pooled cell statistics
WEIGHT_STEP = 2.0 ** -6  # grid of the projection weights and biases (|w| <= 1)


def quantise(t: torch.Tensor, step: float) -> torch.Tensor:
    """`t` rounded to multiples of `step` (a power of two: every operation is exact)."""
    return torch.round(t / step) * step


def grid_size(side: int, level: dict[str, Any]) -> int:
    """Cells along one side: ceil(side / stride) for a padded conv net's stride, floor(side / patch) for a ViT."""
    if "patch" in level:
        return max(1, side // level["patch"])
    return max(1, -(-side // level["stride"]))


def level_shapes(levels: Sequence[dict[str, Any]], height: int, width: int) -> dict[str, tuple[int, int, int]]:
    """(C, h, w) of every level for an input of `height` × `width`."""
    return {lv["name"]: (lv["channels"], grid_size(height, lv), grid_size(width, lv)) for lv in levels}


def moments(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] float64 on the input grid → [B, 6, H, W]: each channel and its square (computed once per
    batch, pooled per level)."""
    return torch.cat([x, x * x], dim=1)


def cell_stats(xx: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`moments` [B, 6, H, W] → [B, 6, h, w]: per cell the mean of each channel and of its square, on the
    input grid. The window sums are exact in float64, so the pooling order does not matter."""
    return quantise(F.adaptive_avg_pool2d(xx, size), INPUT_STEP)


class SyntheticProjections(nn.Module):
    """The frozen part: one seeded 1×1 projection (statistics → channels) per level, and one for the global
    embedding when it is not pooled from levels. Weights and biases are drawn under `seeded_init` (float64,
    the same on every CPU) and rounded to `WEIGHT_STEP`."""

    def __init__(self, levels: Sequence[dict[str, Any]], global_dim: int | None):
        super().__init__()
        self.levels = {lv["name"]: dict(lv) for lv in levels}
        outputs = {lv["name"]: lv["channels"] for lv in levels}
        if global_dim is not None:
            outputs["global"] = global_dim
        # Drawn level by level (weight, then bias), in card order: the draw order is part of the features.
        self.weight, self.bias = nn.ParameterDict(), nn.ParameterDict()
        for name, channels in outputs.items():
            self.weight[name] = nn.Parameter(self._draw((channels, SYNTHETIC_STATS), 0.5))
            self.bias[name] = nn.Parameter(self._draw((channels,), 0.25))

    @staticmethod
    def _draw(shape: tuple[int, ...], scale: float) -> torch.Tensor:
        return quantise(torch.randn(shape) * scale, WEIGHT_STEP).clamp_(-1.0, 1.0)

    def project(self, name: str, stats: torch.Tensor) -> torch.Tensor:
        """[B, 6, h, w] → ReLU(W · stats + b) as [B, C, h, w] in the weights' dtype."""
        b, k, h, w = stats.shape
        flat = stats.to(self.weight[name].dtype).reshape(b, k, h * w)
        out = torch.matmul(self.weight[name], flat).add_(self.bias[name][:, None]).relu_()
        return out.reshape(b, -1, h, w)


class SyntheticNeck(nn.Module):
    """A cheap trainable neck over the dense dict: per level a 1×1 conv to `width` + GELU, global average
    pooling, concatenation, a linear map to `embed_dim` (the shape of work a U-head does, at toy cost)."""

    def __init__(self, channels: dict[str, int], width: int, embed_dim: int):
        super().__init__()
        self.level_names = list(channels)
        self.reduce = nn.ModuleDict({k: nn.Conv2d(c, width, 1) for k, c in channels.items()})
        self.out = nn.Linear(width * len(channels), embed_dim)

    def forward(self, dense: dict[str, torch.Tensor]) -> torch.Tensor:
        pooled = [F.gelu(self.reduce[k](dense[k])).mean(dim=(2, 3)) for k in self.level_names]
        return self.out(torch.cat(pooled, dim=1))


def _random_only(name: str, spec: str) -> None:
    if spec != "random":
        raise ConfigError(f"backbone '{name}' is synthetic and has no weights; got weights '{spec}' "
                          f"(leave --weights unset, or pass 'random')")


@register_backbone("synthetic")
class SyntheticBackbone(Backbone):
    """SYNTHETIC (load tests only): real feature shapes (sd15, ViT-L/14, ResNet-50) from a cheap seeded
    function of the image; bit-identical whatever the batch, the position in it or the thread count."""

    name = "synthetic"
    variants = SYNTHETIC
    default_variant = "tiny"
    feature_kinds = ("global", "dense")

    def __init__(self, config: BackboneConfig):
        super().__init__(config)
        torch_dtype(config.dtype)  # validates the name before any work
        spec = config.weights or self.card.weights
        _random_only(self.name, spec)
        self.device = torch.device(config.device)
        self.weights: ResolvedWeights = resolve_weights(spec, seed=config.seed)
        self.levels: tuple[dict[str, Any], ...] = tuple(self.card.extra["levels"])
        self.global_levels: tuple[str, ...] = tuple(self.card.extra["global_levels"])
        with seeded_init(config.seed):
            model = SyntheticProjections(self.levels, None if self.global_levels else self.card.extra["embed_dim"])
        self.model = freeze(model, self.device, config.dtype)

    @classmethod
    def weights_fingerprint(cls, config: BackboneConfig) -> str:
        """`random(seed=...)` through `resolve_weights`, as every random init; any other spec is refused early."""
        card = cls.variants[config.variant or cls.default_variant]
        spec = config.weights or card.weights
        _random_only(cls.name, spec)
        return resolve_weights(spec, seed=config.seed).fingerprint

    def fingerprint(self) -> dict[str, Any]:
        side = self.card.extra["resolution"]
        data_config = {"mean": MEAN, "std": STD, "interpolation": "bicubic", "crop": "center"}
        return {**identity_fingerprint(self, self.weights, (3, side, side), data_config),
                "dtype": self.config.dtype, "synthetic": True, "feature_version": FEATURE_VERSION,
                "levels": [dict(lv) for lv in self.levels], "global_levels": list(self.global_levels)}

    # -- features ------------------------------------------------------------------------------------------
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Short side → resolution (bicubic), center crop, (x/255 − mean) / std; per image, then stacked."""
        side = self.card.extra["resolution"]
        mean = torch.tensor(MEAN).view(3, 1, 1)
        std = torch.tensor(STD).view(3, 1, 1)
        return torch.stack([(square_crop_pixels(im, side) / 255.0 - mean) / std for im in images])

    def dense_shapes(self, height: int, width: int) -> dict[str, tuple[int, int, int]]:
        """(C, h, w) of every dense level for an input of `height` × `width`, without a forward pass."""
        return level_shapes(self.levels, height, width)

    @classmethod
    def feature_shapes(cls, config: BackboneConfig) -> dict[str, dict[str, tuple[int, ...]]]:
        """One image's feature shapes per kind at the card's resolution, from the card alone (for the planner's
        byte estimates): `{"global": {"global": (D,)}, "dense": {level: (C, h, w)}}`."""
        card = cls.variants[config.variant or cls.default_variant]
        side = card.extra["resolution"]
        return {"global": {"global": (card.extra["embed_dim"],)},
                "dense": level_shapes(card.extra["levels"], side, side)}

    def image_features(self, batch: torch.Tensor, kinds: Sequence[str] = ("global",)) -> Features:
        """Levels from the image's cell statistics; fp32 on the CPU whatever the compute dtype (fp16/bf16
        autocast the projections, as the other backbones' convolutions are)."""
        check_kinds(self.name, kinds, self.feature_kinds)
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise HarnessError(f"backbone '{self.name}' takes [B, 3, H, W] batches, got {tuple(batch.shape)}")
        height, width = batch.shape[-2:]
        want_levels = "dense" in kinds or ("global" in kinds and self.global_levels)
        with compute_context(self.device, self.config.dtype):
            with torch.autocast(self.device.type, enabled=False):  # statistics stay exact float64
                xx = moments(quantise(batch.to(self.device, torch.float64).contiguous(), INPUT_STEP))
                by_grid: dict[tuple[int, int], torch.Tensor] = {}  # levels of one grid share their statistics
                stats = {}
                for lv in self.levels if want_levels else ():
                    size = (grid_size(height, lv), grid_size(width, lv))
                    if size not in by_grid:
                        by_grid[size] = cell_stats(xx, size)
                    stats[lv["name"]] = by_grid[size]
            levels = {k: self.model.project(k, s) for k, s in stats.items()}
            out = Features()
            if "global" in kinds:
                if self.global_levels:
                    # float64 sums of values on the 2^-14 grid are exact: the mean is one rounding of the exact sum
                    pooled = [levels[k].to(torch.float64).sum(dim=(2, 3)) / (levels[k].shape[-2] * levels[k].shape[-1])
                              for k in self.global_levels]
                    out.global_ = to_float32(torch.cat(pooled, dim=1)).cpu()
                else:
                    with torch.autocast(self.device.type, enabled=False):
                        whole = cell_stats(xx, (1, 1))
                    out.global_ = to_float32(self.model.project("global", whole).flatten(1)).cpu()
            if "dense" in kinds:
                out.dense = {k: to_float32(v).cpu() for k, v in levels.items()}
        return out

    # -- trainable neck ------------------------------------------------------------------------------------
    def dense_channels(self) -> dict[str, int]:
        """Channels of every `dense` entry, without a forward pass."""
        return {lv["name"]: lv["channels"] for lv in self.levels}

    def neck(self, seed: int | None = None) -> SyntheticNeck:
        """A fresh neck: dense dict → [B, 256]; initialised under `seed` (default: the config's) without
        disturbing the caller's RNG."""
        spec = self.card.extra["neck"]
        with seeded_init(self.config.seed if seed is None else seed):
            neck = SyntheticNeck(self.dense_channels(), spec["width"], spec["embed_dim"])
        return neck.float()
