"""What every backbone does the same way: dtype names, autocast, freezing, feature-kind checks, the identity
part of a fingerprint."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from harness.errors import ConfigError, HarnessError

if TYPE_CHECKING:  # pragma: no cover
    from harness.api import Backbone
    from harness.data.weights import ResolvedWeights

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp64": torch.float64}


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(f"backbone.dtype must be one of {', '.join(DTYPES)}, got '{name}'")
    return DTYPES[name]


def weights_dtype(dtype_name: str) -> torch.dtype:
    """The dtype weights and inputs are held in: float64 for `fp64`, else float32 (fp16/bf16 are autocast).

    `fp64` exists for portability, not speed: a forward pass in double precision rounded to the float32 of the
    feature cache gives the same bits whatever the CPU's vector kernels and thread count, where float32's
    kernels differ in the last bits (the `mini` suite runs so, to reproduce on any x86-64 machine).
    """
    return torch.float64 if torch_dtype(dtype_name) == torch.float64 else torch.float32


def compute_context(device: torch.device, dtype_name: str) -> contextlib.AbstractContextManager:
    """Inference mode plus autocast for fp16/bf16 (weights stay fp32; outputs are cast back by the caller);
    fp32 and fp64 run in the weights' own dtype (`weights_dtype`)."""
    dtype = torch_dtype(dtype_name)
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    if dtype in (torch.float16, torch.bfloat16):
        stack.enter_context(torch.autocast(device.type, dtype=dtype))
    return stack


def freeze(model: torch.nn.Module, device: torch.device, dtype_name: str = "fp32") -> torch.nn.Module:
    """Eval mode (BatchNorm statistics fixed), no gradients, on the device, in `weights_dtype(dtype_name)`.

    A diffusers model that keeps no module in fp32 is cast by `torch.nn.Module.to` itself: diffusers' own `to`
    casts the same way but warns on every dtype cast, even with an empty `_keep_in_fp32_modules` (diffusers 0.3x),
    which filled every run's output with noise."""
    model = model.eval().requires_grad_(False)
    if hasattr(model, "_keep_in_fp32_modules") and not model._keep_in_fp32_modules:
        return torch.nn.Module.to(model, device, weights_dtype(dtype_name))
    return model.to(device, weights_dtype(dtype_name))


def square_crop_pixels(im, size: int) -> torch.Tensor:
    """An image → float32 [3, size, size] in 0..255: short side to `size` (bicubic), center crop (the
    preprocessing of Vermouth's tasks, and of the synthetic backbone that stands in for it)."""
    import numpy as np
    from PIL import Image

    im = im if im.mode == "RGB" else im.convert("RGB")
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    im = im.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).permute(2, 0, 1)


def check_kinds(backbone: str, kinds: Sequence[str], known: Sequence[str]) -> None:
    unknown = set(kinds) - set(known)
    if unknown:
        raise HarnessError(f"backbone '{backbone}' has no feature kind(s) {sorted(unknown)}; known: {', '.join(known)}")


def identity_fingerprint(backbone: Backbone, weights: ResolvedWeights, input_size: Sequence[int],
                         data_config: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint keys every backbone has: name, card, weights identity, input size, preprocessing config
    (tuples as lists, as JSON has them). A backbone adds its own keys (dtype, model config, ...)."""
    return {
        "backbone": backbone.name,
        "variant": backbone.card.name,
        "arch": backbone.card.arch,
        "weights": weights.fingerprint,
        "weights_kind": weights.kind,
        "input_size": list(input_size),
        "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()},
    }


# The keys of a timm pretrained_cfg that change preprocessing (what resolve_model_data_config reads).
TIMM_DATA_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def timm_weights_data_cfg(path: Path | None) -> dict[str, Any]:
    """The preprocessing keys of a timm `config.json` beside the weights, as timm's own hf-hub loader uses."""
    cfg_path = path.parent / "config.json" if path is not None else None
    if cfg_path is None or not cfg_path.is_file():
        return {}
    try:
        pretrained = json.loads(cfg_path.read_text()).get("pretrained_cfg") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in pretrained.items() if k in TIMM_DATA_KEYS}


def dense_block_indices(depth: int, levels: int = 4) -> list[int]:
    """`levels` evenly spaced 0-based block indices ending with the last block (12 -> 2, 5, 8, 11)."""
    n = min(levels, depth)
    return [round(depth * (k + 1) / n) - 1 for k in range(n)]


def load_strict(model: torch.nn.Module, state: dict[str, Any], path: Path) -> None:
    """Load a (pre-filtered) state dict strictly; a mismatch is one line of counts and first examples."""
    from harness.data.weights import fit_state_dict

    fit_state_dict(model, state, path)
