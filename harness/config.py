"""Config models (pydantic, unknown keys forbidden) and YAML loading with errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from harness.api import StrictModel
from harness.errors import ConfigError

Dtype = Literal["fp32", "fp16", "bf16", "fp64"]
FeatureDtype = Literal["fp16", "bf16", "fp32"]


class BackboneConfig(StrictModel):
    """Which backbone, which weights, where it runs. `variant=None` means the backbone's default."""

    name: str
    variant: str | None = None
    weights: str | None = None  # hub id, local file/folder, or "random"; None = the variant's default
    device: str = "cpu"
    dtype: Dtype = "fp32"
    # What heads see and the feature store keeps: features rounded to this dtype (harness.cache).
    feature_dtype: FeatureDtype = "fp16"
    batch_size: int = Field(32, ge=1)
    seed: int = 0  # seeds random-init weights
    options: dict[str, Any] = Field(default_factory=dict)  # backbone-specific feature options (Vermouth: t, stages)

    def __hash__(self) -> int:  # `options` is a dict; the canonical JSON identifies the config
        from harness.io import canonical_json

        return hash(canonical_json(self.model_dump(mode="json")))


class SuiteEntry(StrictModel):
    """One task over some datasets; `grid` lists the protocol points (shots, seed, ...) to expand."""

    task: str
    datasets: list[str] = Field(min_length=1)
    protocol: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("grid")
    @classmethod
    def _non_empty_axes(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid axis '{key}' is empty")
        return grid


class SuiteSpec(StrictModel):
    """A suite is data: task x dataset x protocol points, plus backbone defaults (e.g. the `tiny` variant)."""

    name: str
    description: str = ""
    variant: str | None = None  # backbone variant used unless --variant says otherwise
    device: str = "cpu"
    # Compute precision of every backbone (and of heads and the text space when `fp64`) unless --dtype says
    # otherwise: `fp64` makes the suite's numbers the same on every CPU and thread count (harness.numerics).
    dtype: Dtype = "fp32"
    # Frozen features are rounded to this dtype before any head and stored so (half the bytes of fp32);
    # `fp32` keeps them as computed.
    feature_dtype: FeatureDtype = "fp16"
    batch_size: int = Field(32, ge=1)
    # Backbone feature options for every backbone of the suite, and a grid over them (a Vermouth
    # timestep x UNet-stage sweep is one suite): each grid point is its own backbone config and row.
    backbone_options: dict[str, Any] = Field(default_factory=dict)
    backbone_grid: dict[str, list[Any]] = Field(default_factory=dict)
    entries: list[SuiteEntry] = Field(min_length=1)


class RunConfig(StrictModel):
    """Everything `harness run` was asked to do."""

    suite: str
    backbones: list[str]
    variant: str | None = None
    weights: str | None = None
    device: str | None = None
    dtype: Dtype | None = None  # None: the suite's
    feature_dtype: FeatureDtype | None = None  # None: the suite's
    batch_size: int | None = None
    seeds: list[int] | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    backbone_options: dict[str, Any] = Field(default_factory=dict)
    resume: bool = True
    skip_missing: bool = False
    dry_run: bool = False


def format_validation_error(exc: ValidationError, where: str) -> str:
    """One line per problem, each naming the key path, so a typo is found at once."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        problems.append(f"'{key}': {msg}")
    return f"{where}: " + "; ".join(problems)


def validate(model: type[StrictModel], data: Any, where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from None


def load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None


def load_model(model: type[StrictModel], path: Path) -> Any:
    """Load a YAML file into a config model; errors name the file and the key."""
    return validate(model, load_yaml(path), str(path))


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs from `--set`; values are parsed as YAML scalars (`16`, `1e-4`, `true`, `[1,2]`)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got '{pair}'")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: cannot parse value '{raw}'") from None
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` as a string; a number is meant
            try:
                value = float(value)
            except ValueError:
                pass
        out[key.strip()] = value
    return out
