"""Test-time inference of a dense classifier: whole image, or sliding windows whose logits are averaged.

Everything takes a `logits_fn` that maps a normalised batch [B, 3, h, w] to class logits at any resolution
[B, K, h', w'], so the same code runs the real head and the tests' toy models. Inputs are padded (with zeros,
i.e. the mean colour after normalisation) to a multiple of `size_divisor`, because ViT patch grids, ResNet
strides and SD's UNet all want one; the padded border is cropped off the upsampled logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a [B, C, H, W] float tensor (antialiased when shrinking, as PIL would)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def short_side_size(height: int, width: int, short: int, max_long: int | None = None) -> tuple[int, int]:
    """(h, w): short side at `short`, long side capped at `max_long` (detectron2's ResizeShortestEdge)."""
    scale = short / min(height, width)
    if max_long is not None and max(height, width) * scale > max_long:
        scale = max_long / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def forward_dense(fn: LogitsFn, x: torch.Tensor, size_divisor: int = 1) -> torch.Tensor:
    """Logits at the input's own resolution: pad to the divisor, run, upsample, crop the padding."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % size_divisor, (-w) % size_divisor
    padded = F.pad(x, (0, pw, 0, ph)) if ph or pw else x
    logits = fn(padded)
    logits = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear", align_corners=False)
    return logits[..., :h, :w]


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Window offsets along one axis (mmseg's `slide_inference`): stride steps, the last window flush with the end."""
    if stride < 1 or crop < 1:
        raise ValueError(f"crop and stride must be >= 1, got crop={crop}, stride={stride}")
    n = max(math.ceil((length - crop) / stride), 0) + 1
    return sorted({min(i * stride, max(length - crop, 0)) for i in range(n)})


def slide_logits(fn: LogitsFn, x: torch.Tensor, crop: int, stride: int, size_divisor: int = 1) -> torch.Tensor:
    """[1, 3, H, W] → [1, K, H, W]: every crop×crop window's logits (at window resolution), summed where
    windows overlap and divided by the number of windows covering each pixel."""
    if x.shape[0] != 1:
        raise ValueError("slide inference takes one image at a time")
    height, width = x.shape[-2:]
    total: torch.Tensor | None = None
    count: torch.Tensor | None = None
    for top in window_starts(height, crop, stride):
        for left in window_starts(width, crop, stride):
            window = x[..., top:top + crop, left:left + crop]
            logits = forward_dense(fn, window, size_divisor)
            if total is None or count is None:  # on the logits' device, whatever the input's
                total = logits.new_zeros(1, logits.shape[1], height, width)
                count = logits.new_zeros(1, 1, height, width)
            total[..., top:top + crop, left:left + crop] += logits
            count[..., top:top + crop, left:left + crop] += 1
    assert total is not None and count is not None
    return total / count


def predict_logits(fn: LogitsFn, x: torch.Tensor, style: str, *, short_side: int, max_long_side: int | None,
                   size_divisor: int, slide_crop: int | None = None, slide_stride: int | None = None,
                   slide_square: bool = False, slide_global: bool = False) -> torch.Tensor:
    """One normalised image [1, 3, H, W] → logits [1, K, H, W] at its original size (protocols.md C.2).

    whole: short side → `short_side` (long side capped), one forward pass.
    slide: resize (to `short_side`² when `slide_square`, as CAT-Seg, else short side), average windows; with
    `slide_global` the result is averaged 50/50 with one view of the whole image resized to the crop.
    """
    height, width = x.shape[-2:]
    with torch.no_grad():
        if style == "whole":
            size = short_side_size(height, width, short_side, max_long_side)
            logits = forward_dense(fn, resize(x, size), size_divisor)
        elif style == "slide":
            if slide_crop is None or slide_stride is None:
                raise ValueError("slide inference needs slide_crop and slide_stride")
            size = (short_side, short_side) if slide_square else short_side_size(height, width, short_side,
                                                                                max_long_side)
            resized = resize(x, size)
            logits = slide_logits(fn, resized, slide_crop, slide_stride, size_divisor)
            if slide_global:
                glob = forward_dense(fn, resize(x, (slide_crop, slide_crop)), size_divisor)
                logits = 0.5 * logits + 0.5 * resize(glob, size)
        else:
            raise ValueError(f"unknown eval style '{style}'")
        return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
