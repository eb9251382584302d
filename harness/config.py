"""Config models (pydantic, unknown keys forbidden) and YAML loading with errors that name the key."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from harness.api import StrictModel
from harness.errors import ConfigError

Dtype = Literal["fp32", "fp16", "bf16", "fp64"]
FeatureDtype = Literal["fp16", "bf16", "fp32"]

# Upper bounds of the values a typo can make endless (`epochs: 100000000000`): far above any real protocol,
# low enough that a slip is an error before any work. Task protocol models use them too (`le=`).
MAX_BATCH_SIZE = 65_536
MAX_EPOCHS = 10_000
MAX_ITERATIONS = 1_000_000
MAX_SEED = 2**32 - 1  # what numpy's and torch's generators take everywhere
DEVICE_FORMS = "cpu | cuda | cuda:N | mps | auto"
_DEVICE = re.compile(r"(cpu|cuda|cuda:\d+|mps|auto)")


def check_device_name(device: str) -> str:
    """A device string the planner and torch understand; anything else is an error naming the forms."""
    if not _DEVICE.fullmatch(device):
        raise ValueError(f"unknown device '{device}'; expected {DEVICE_FORMS}")
    return device


def check_device_available(device: str, source: str = "--device") -> str:
    """`cuda` / `cuda:N` only where torch sees that device: one line before any model is built, rather than a
    CUDA traceback from the first tensor moved there. Imports torch only for a cuda device."""
    try:
        check_device_name(device)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if device in ("cpu", "auto"):
        return device
    import torch

    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device 'mps' ({source}) is not available on this machine; use --device cpu")
    if device == "mps":
        return device
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        raise ConfigError(f"device '{device}' ({source}) is not available: {why}; use --device cpu, or auto "
                          "(cuda when visible)")
    index = int(device.partition(":")[2] or 0)
    if index >= (n := torch.cuda.device_count()):
        raise ConfigError(f"device '{device}' ({source}) is not available: only {n} CUDA device(s) visible "
                          f"(cuda:0..cuda:{n - 1}); pick one of them")
    return device


class BackboneConfig(StrictModel):
    """Which backbone, which weights, where it runs. `variant=None` means the backbone's default."""

    name: str
    variant: str | None = None
    weights: str | None = None  # hub id, local file/folder, or "random"; None = the variant's default
    device: str = "cpu"
    dtype: Dtype = "fp32"
    # What heads see and the feature store keeps: features rounded to this dtype (harness.data.cache).
    feature_dtype: FeatureDtype = "fp16"
    batch_size: int = Field(32, ge=1, le=MAX_BATCH_SIZE)
    seed: int = Field(0, ge=0, le=MAX_SEED)  # seeds random-init weights
    options: dict[str, Any] = Field(default_factory=dict)  # backbone-specific feature options (Vermouth: t, stages)

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        return check_device_name(device)

    def __hash__(self) -> int:  # `options` is a dict; the canonical JSON identifies the config
        from harness.io import canonical_json

        return hash(canonical_json(self.model_dump(mode="json")))


class SuiteEntry(StrictModel):
    """One task over some datasets; `grid` lists the protocol points (shots, seed, ...) to expand."""

    task: str
    datasets: list[str] = Field(min_length=1)
    protocol: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    # Backbone feature options for this entry's jobs only: over the backbone's task preset and the suite's
    # options, under --opt (a suite can pin, say, Vermouth's t for one task).
    backbone_options: dict[str, Any] = Field(default_factory=dict)

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
    batch_size: int = Field(32, ge=1, le=MAX_BATCH_SIZE)
    # Backbone feature options for every backbone of the suite, and a grid over them (a Vermouth
    # timestep x UNet-stage sweep is one suite): each grid point is its own backbone config and row.
    backbone_options: dict[str, Any] = Field(default_factory=dict)
    backbone_grid: dict[str, list[Any]] = Field(default_factory=dict)
    entries: list[SuiteEntry] = Field(min_length=1)

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        return check_device_name(device)


class RunConfig(StrictModel):
    """Everything `harness run` was asked to do."""

    suite: str
    backbones: list[str]
    variant: str | None = None
    weights: str | None = None
    device: str | None = None
    dtype: Dtype | None = None  # None: the suite's
    feature_dtype: FeatureDtype | None = None  # None: the suite's
    batch_size: int | None = Field(None, ge=1, le=MAX_BATCH_SIZE)  # 0 is an error, not "the suite's"
    seeds: list[int] | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    backbone_options: dict[str, Any] = Field(default_factory=dict)
    resume: bool = True
    skip_missing: bool = False
    dry_run: bool = False
    limit: int = Field(0, ge=0)  # first N items of each split (0: all); such runs form their own suite `<suite>@limitN`

    @field_validator("device")
    @classmethod
    def _device(cls, device: str | None) -> str | None:
        return None if device is None else check_device_name(device)


# How RunConfig's fields are spelled on the command line, so an error names the option the user typed.
_OPTION_NAMES = {"backbones": "--backbone", "overrides": "--set", "backbone_options": "--opt"}


def format_validation_error(exc: ValidationError, where: str) -> str:
    """One line per problem, each naming the key path, so a typo is found at once."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        if where == "command line" and err["loc"]:
            first = str(err["loc"][0])
            key = _OPTION_NAMES.get(first, "--" + first.replace("_", "-"))
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        problems.append(f"'{key}': {msg}")
    return f"{where}: " + "; ".join(problems)


def validate(model: type[StrictModel], data: Any, where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from None


def load_yaml(path: Path) -> Any:
    """A YAML file's data; a missing, unreadable, non-UTF-8, malformed or absurdly nested file is one line."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); "
                          "save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: malformed YAML: nested too deeply to read") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None


def load_model(model: type[StrictModel], path: Path) -> Any:
    """Load a YAML file into a config model; errors name the file and the key."""
    return validate(model, load_yaml(path), str(path))


def parse_overrides(pairs: list[str], option: str = "--set") -> dict[str, Any]:
    """`KEY=VALUE` pairs from `--set` (or `--opt`: `option` names it in errors); values are parsed as YAML
    scalars (`16`, `1e-4`, `true`, `[1,2]`)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} expects KEY=VALUE, got '{pair}'")
        try:
            value = yaml.safe_load(raw)
        except (yaml.YAMLError, RecursionError):
            raise ConfigError(f"{option} {key}: cannot parse value '{raw}'") from None
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` as a string; a number is meant
            try:
                value = float(value)
            except ValueError:
                pass
        out[key.strip()] = value
    return out


def parse_ints(option: str, text: str, *, minimum: int | None = None, maximum: int | None = None) -> list[int]:
    """`1,2,3` from a command-line option; anything else is one line naming the option and the bad item."""
    items = [v.strip() for v in text.split(",") if v.strip()]
    if not items:
        raise ConfigError(f"{option} expects integers like 1,2,3, got '{text}'")
    values = []
    for item in items:
        try:
            value = int(item)
        except ValueError:
            where = "" if item == text.strip() else f" in '{text}'"
            raise ConfigError(f"{option} expects integers like 1,2,3, got '{item}'{where}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f"between {minimum} and {maximum}" if minimum is not None and maximum is not None else \
                f">= {minimum}" if minimum is not None else f"<= {maximum}"
            raise ConfigError(f"{option}: {value} is out of range; each value must be {bounds}")
        values.append(value)
    return values


def check_out_dir(path: Path, option: str = "--out-dir") -> Path:
    """A folder outputs can be written to, checked before any work without creating it: the path, or the nearest
    ancestor that exists, is a writable directory."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is a file, not a folder; give a folder (it is created if missing)")
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"{option} {path}: {probe} is a file, not a folder; give a folder path")
    if not os.access(probe if probe.exists() else Path.cwd(), os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: {probe} is not writable; give a folder you can write to")
    return path
