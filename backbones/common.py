"""What every backbone does the same way: dtype names, autocast, freezing, feature-kind checks."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from harness.errors import ConfigError, HarnessError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(f"backbone.dtype must be one of {', '.join(DTYPES)}, got '{name}'")
    return DTYPES[name]


def compute_context(device: torch.device, dtype_name: str) -> contextlib.AbstractContextManager:
    """Inference mode plus autocast for fp16/bf16 (weights stay fp32; outputs are cast back by the caller)."""
    dtype = torch_dtype(dtype_name)
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    if dtype != torch.float32:
        stack.enter_context(torch.autocast(device.type, dtype=dtype))
    return stack


def freeze(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Eval mode (BatchNorm statistics fixed), no gradients, on the device."""
    return model.eval().requires_grad_(False).to(device)


def check_kinds(backbone: str, kinds: Sequence[str], known: Sequence[str]) -> None:
    unknown = set(kinds) - set(known)
    if unknown:
        raise HarnessError(f"backbone '{backbone}' has no feature kind(s) {sorted(unknown)}; known: {', '.join(known)}")
