"""The validated Vermouth options: card defaults, then overrides; unknown keys and bad values are errors.

Torch-free (pydantic only), so the planner can read them. The options that change the frozen features
(t, noise, stages, prompt, resolution, expert, cross-attention) enter the backbone fingerprint; the neck
options (`uhead`, `dense_head`) do not, so changing a head never invalidates cached SD features.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from backbones.vermouth.cards import LEVELS
from harness.api import StrictModel, VariantCard
from harness.config import validate

CARD_INFO_KEYS = ("params", "feature_kinds", "task_presets")  # card data for listings and planning, not options


class UHeadOptions(StrictModel):
    """The FSC/SBIR U-head (§4.1): per-level widths for L0..L3, GroupNorm groups, attention-pool heads."""

    widths: tuple[int, int, int, int]
    groups: int = Field(ge=1)
    heads: int = Field(ge=1)
    embed_dim: int = Field(ge=1)
    pool_size: int = Field(4, ge=1)


class DenseHeadOptions(StrictModel):
    """The OVSS head (§4.2): per-level projection widths for L0..L3, Semantic-FPN channels, pixel embedding."""

    widths: tuple[int, int, int, int]
    fpn_channels: int = Field(ge=1)
    groups: int = Field(ge=1)
    embed_dim: int = Field(ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class ExpertSpec(StrictModel):
    """A timm architecture and its weights (hub id, file or "random"); `input_size` resizes its input."""

    arch: str
    weights: str
    input_size: int | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)


class VermouthOptions(StrictModel):
    t: int = Field(200, ge=0)
    noise: Literal["ddpm", "none"] = "ddpm"
    prompt: str = "empty"
    stages: tuple[str, ...] = LEVELS
    resolution: int = Field(512, ge=64)
    expert: Literal["none", "resnet18", "dinov2"] = "none"
    experts: dict[str, ExpertSpec] = Field(default_factory=dict)
    # How the adapted expert taps join their levels (a neck option): `official` = per expert as the official
    # code (ResNet-18 L2-normalised, DINOv2 plain), `l2` = both L2-normalised, `plain` = plain concatenation.
    expert_fusion: Literal["official", "l2", "plain"] = "official"
    cross_attention: bool = False
    cross_attention_l3: bool = False
    global_pool: Literal["levels_gap_concat"] = "levels_gap_concat"
    captioner: str | None = None  # None: <pipeline folder>/blip if present, else `default_captioner`
    default_captioner: str = "random"  # the card's BLIP (hub id, folder or "random")
    caption_prefix: str = "a picture of "
    caption_max_length: int = Field(10, ge=2)
    caption_min_length: int = Field(5, ge=0)
    early_exit: bool = True
    uhead: UHeadOptions
    dense_head: DenseHeadOptions

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        if value in ("empty", "blip") or (value.startswith("fixed:") and value[len("fixed:"):].strip()):
            return value
        raise ValueError(f"prompt must be 'empty', 'blip' or 'fixed:<text>', got '{value}'")

    @field_validator("stages", mode="before")
    @classmethod
    def _one_stage(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value  # `--opt stages=L1` means ("L1",)

    @field_validator("stages")
    @classmethod
    def _stages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [s for s in value if s not in LEVELS]
        if unknown or not value:
            raise ValueError(f"stages must be a non-empty subset of {', '.join(LEVELS)}, got {list(value)}")
        return tuple(s for s in LEVELS if s in value)  # canonical order, duplicates dropped

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: int) -> int:
        if value % 64:  # VAE /8 then three UNet downsamplings /8: skip connections must line up
            raise ValueError(f"resolution must be a multiple of 64, got {value}")
        return value

    def feature_config(self) -> dict[str, Any]:
        """The options that change the frozen features (the fingerprint's part)."""
        out: dict[str, Any] = {k: getattr(self, k) for k in (
            "t", "noise", "prompt", "resolution", "expert", "cross_attention", "global_pool")}
        out["stages"] = list(self.stages)
        if self.cross_attention:
            out["cross_attention_l3"] = self.cross_attention_l3
        if self.prompt == "blip":
            out["caption"] = {"prefix": self.caption_prefix, "max_length": self.caption_max_length,
                              "min_length": self.caption_min_length}
        if self.expert != "none":
            spec = self.experts[self.expert]
            out["expert_arch"] = {"arch": spec.arch, "input_size": spec.input_size, "kwargs": spec.kwargs}
        return out


def resolve_options(card: VariantCard, overrides: dict[str, Any] | None = None) -> VermouthOptions:
    """Card defaults < overrides (nested dicts such as `uhead` merge key by key); raises ConfigError."""
    data: dict[str, Any] = {k: v for k, v in card.extra.items() if k not in CARD_INFO_KEYS}
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    opts = validate(VermouthOptions, data, f"vermouth:{card.name} options")
    if opts.expert != "none" and opts.expert not in opts.experts:
        from harness.errors import ConfigError

        raise ConfigError(f"vermouth:{card.name} options: 'expert': no spec for '{opts.expert}' in 'experts' "
                          f"(known: {', '.join(opts.experts) or 'none'})")
    return opts
