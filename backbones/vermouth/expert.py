"""The adapted expert (§5, §11.4): a frozen discriminative trunk whose taps join the diffusion levels.

Frozen part (cacheable, in the backbone's `dense` features): a timm ResNet-18 (layer2/3/4 at image
/8, /16, /32, the sizes of L3, L2, L1) or DINOv2 (blocks 2/5/8/11 at 224 px, no final norm, class token
dropped, resized to L3, L2, L1, L0), fed the image in [0, 1] with the trunk's own normalisation, BatchNorm
in eval mode (the official code left it in train mode, §9 bug 6). Trainable part (in the neck): one
bottleneck adapter per tap (1×1 C→C/4, ReLU, 1×1 C/4→C, no bias, no residual); the adapted tap is
concatenated to its level as the official code does per expert (ResNet-18: both L2-normalised along channels;
DINOv2: plain), or as option `expert_fusion` says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import timm
import timm.data
import torch
import torch.nn.functional as F
from torch import nn

from backbones.common import freeze
from backbones.vermouth.options import ExpertSpec
from harness.data.weights import ResolvedWeights, load_state_dict, resolve_weights
from harness.errors import HarnessError
from harness.numerics import seeded_init

# Dense key → (timm intermediate index, level it joins), per expert kind.
EXPERT_TAPS: dict[str, dict[str, tuple[int, str]]] = {
    "resnet18": {"expert_layer2": (2, "L3"), "expert_layer3": (3, "L2"), "expert_layer4": (4, "L1")},
    "dinov2": {"expert_block2": (2, "L3"), "expert_block5": (5, "L2"), "expert_block8": (8, "L1"),
               "expert_block11": (11, "L0")},
}


class ExpertTrunk:
    """A frozen timm trunk → {tap key: [B, C, h, w]} resized to the sizes of the levels they join."""

    def __init__(self, kind: str, spec: ExpertSpec, *, seed: int, device: torch.device,
                 levels: tuple[str, ...], dtype: str = "fp32"):
        if kind not in EXPERT_TAPS:
            raise HarnessError(f"unknown expert '{kind}'; known: {', '.join(EXPERT_TAPS)}")
        self.kind, self.spec = kind, spec
        self.taps = {k: v for k, v in EXPERT_TAPS[kind].items() if v[1] in levels}
        self.weights: ResolvedWeights = resolve_weights(spec.weights, seed=seed)
        kwargs: dict[str, Any] = dict(spec.kwargs)
        if kind == "dinov2":
            kwargs.setdefault("dynamic_img_size", True)  # pretrained 518-px position grid, run at input_size
        with seeded_init(seed, portable=self.weights.path is None):
            model = timm.create_model(spec.arch, pretrained=False, num_classes=0, **kwargs)
        if self.weights.path is not None:
            state = {k: v for k, v in load_state_dict(self.weights.path).items() if not k.startswith(("fc.", "head."))}
            result = model.load_state_dict(state, strict=False)
            if result.missing_keys:
                raise HarnessError(f"expert weights {self.weights.path} do not fit {spec.arch}: missing "
                                   f"{result.missing_keys[:5]}")
        self.model = freeze(model, device, dtype)
        cfg = timm.data.resolve_model_data_config(model)
        self.mean = torch.tensor(cfg["mean"], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"], device=device).view(1, 3, 1, 1)

    def channels(self) -> dict[str, int]:
        """Tap channels, from timm's feature info (no forward pass)."""
        if self.kind == "dinov2":
            return {k: int(self.model.embed_dim) for k in self.taps}
        info = {d["module"]: int(d["num_chs"]) for d in self.model.feature_info}
        return {k: info[k.removeprefix("expert_")] for k in self.taps}

    def levels(self) -> dict[str, str]:
        return {k: level for k, (_, level) in self.taps.items()}

    def __call__(self, x: torch.Tensor, sizes: Mapping[str, tuple[int, int]]) -> dict[str, torch.Tensor]:
        """x in [-1, 1]; `sizes` are the spatial sizes of the levels the taps join."""
        x = ((x + 1) / 2 - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        if self.spec.input_size is not None and x.shape[-1] != self.spec.input_size:
            x = F.interpolate(x, size=(self.spec.input_size, self.spec.input_size), mode="bicubic",
                              align_corners=False, antialias=True)
        indices = [index for index, _ in self.taps.values()]
        if self.kind == "dinov2":
            maps = self.model.forward_intermediates(x, indices=indices, norm=False, output_fmt="NCHW",
                                                    intermediates_only=True)
        else:
            maps = self.model.forward_intermediates(x, indices=indices, intermediates_only=True)
        out = {}
        for (key, (_, level)), m in zip(self.taps.items(), maps, strict=True):
            if tuple(m.shape[-2:]) != tuple(sizes[level]):
                m = F.interpolate(m, size=tuple(sizes[level]), mode="bilinear", align_corners=False)
            out[key] = m
        return out

    @property
    def param_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


class BottleneckAdapter(nn.Sequential):
    """1×1 C→C/4, ReLU, 1×1 C/4→C; bias-free, no residual, default init (as the method's adapters)."""

    def __init__(self, channels: int, reduction: int = 4):
        hidden = max(1, channels // reduction)
        super().__init__(nn.Conv2d(channels, hidden, 1, bias=False), nn.ReLU(),
                         nn.Conv2d(hidden, channels, 1, bias=False))


# How each expert joins its levels in the official code (§5): the ResNet-18 taps as cat[L2norm(level),
# L2norm(adapter(tap))] (FSC `model.py`), the DINOv2 taps concatenated plain (SBIR `sbir_model.py`).
OFFICIAL_FUSION = {"resnet18": "l2", "dinov2": "plain"}


def fusion_mode(kind: str, option: str) -> str:
    """`official` → the official code's mode for this expert; `l2` / `plain` as given."""
    return OFFICIAL_FUSION[kind] if option == "official" else option


class ExpertFusion(nn.Module):
    """Adapts each tap and concatenates it to its level: cat[L2norm(level), L2norm(adapter(tap))] (`l2`), or
    cat[level, adapter(tap)] (`plain`)."""

    def __init__(self, tap_channels: Mapping[str, int], tap_levels: Mapping[str, str], mode: str = "l2"):
        super().__init__()
        if mode not in ("l2", "plain"):
            raise ValueError(f"fusion mode must be 'l2' or 'plain', got '{mode}'")
        self.mode = mode
        self.tap_levels = dict(tap_levels)
        self.adapters = nn.ModuleDict({k: BottleneckAdapter(c) for k, c in tap_channels.items()})

    def extra_channels(self) -> dict[str, int]:
        """Channels each level gains."""
        out: dict[str, int] = {}
        for key, level in self.tap_levels.items():
            out[level] = out.get(level, 0) + self.adapters[key][0].in_channels
        return out

    def forward(self, levels: Mapping[str, torch.Tensor], taps: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = dict(levels)
        for key, level in self.tap_levels.items():
            level_map, tap = out[level], self.adapters[key](taps[key])
            if self.mode == "l2":
                level_map, tap = F.normalize(level_map, dim=1), F.normalize(tap, dim=1)
            out[level] = torch.cat([level_map, tap], dim=1)
        return out
