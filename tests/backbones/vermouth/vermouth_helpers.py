"""Plain helpers of the Vermouth tests (a module of its own: a bare `conftest` import is ambiguous when
several test folders with a conftest.py are collected together)."""

from __future__ import annotations

import types

import numpy as np
from PIL import Image


def tiny_cfg(**kw) -> types.SimpleNamespace:
    """A stand-in for harness.config.BackboneConfig."""
    base = dict(name="vermouth", variant="tiny", weights=None, device="cpu", dtype="fp32", batch_size=8, seed=0)
    return types.SimpleNamespace(**{**base, **kw})


def images(n: int = 3, size: tuple[int, int] = (96, 80)) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size[1] + 5 * i, size[0], 3), dtype=np.uint8)) for i in range(n)]
