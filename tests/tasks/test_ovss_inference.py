"""Sliding-window inference: window placement, and equality with whole-image inference where it must hold."""

from __future__ import annotations

import pytest
import torch

from tasks.ovss.inference import forward_dense, predict_logits, short_side_size, slide_logits, window_starts


def pointwise(x: torch.Tensor) -> torch.Tensor:
    """A per-pixel model (1×1 conv): its logits at a pixel depend on that pixel only."""
    w = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0], [-0.7, 1.1, 0.4], [2.0, 0.0, -0.3]])
    return torch.einsum("kc,bchw->bkhw", w, x)


def strided(x: torch.Tensor) -> torch.Tensor:
    """A non-local model with a stride-4 output (what real heads look like)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, 5, stride=4, padding=2)
    with torch.no_grad():
        return conv(x)


def test_window_starts():
    assert window_starts(128, 64, 64) == [0, 64]
    assert window_starts(100, 64, 32) == [0, 32, 36]  # the last window is flush with the end
    assert window_starts(40, 64, 32) == [0]  # smaller than the crop: one window
    with pytest.raises(ValueError):
        window_starts(10, 4, 0)


def test_slide_equals_whole_when_each_pixel_is_covered_once():
    torch.manual_seed(1)
    x = torch.randn(1, 3, 96, 128)  # larger than the crop; stride = crop tiles it exactly
    whole = forward_dense(pointwise, x)
    slide = slide_logits(pointwise, x, crop=32, stride=32)
    torch.testing.assert_close(slide, whole, rtol=0, atol=1e-6)


def test_slide_equals_whole_with_overlaps_for_a_pointwise_model():
    torch.manual_seed(2)
    x = torch.randn(1, 3, 70, 90)
    torch.testing.assert_close(slide_logits(pointwise, x, crop=32, stride=20), forward_dense(pointwise, x),
                               rtol=0, atol=1e-5)


def test_one_window_covering_the_image_is_whole_inference_for_any_model():
    torch.manual_seed(3)
    x = torch.randn(1, 3, 48, 40)
    torch.testing.assert_close(slide_logits(strided, x, crop=64, stride=32, size_divisor=16),
                               forward_dense(strided, x, size_divisor=16), rtol=0, atol=0)


def test_forward_dense_pads_and_crops():
    x = torch.randn(1, 3, 30, 50)
    seen = []

    def fn(t):
        seen.append(tuple(t.shape[-2:]))
        return strided(t)

    out = forward_dense(fn, x, size_divisor=32)
    assert seen == [(32, 64)] and out.shape == (1, 5, 30, 50)


def test_predict_logits_returns_the_original_size():
    x = torch.randn(1, 3, 37, 53)
    for style, extra in (("whole", {}), ("slide", {"slide_crop": 16, "slide_stride": 8, "slide_global": True}),
                         ("slide", {"slide_crop": 16, "slide_stride": 8, "slide_square": True})):
        out = predict_logits(strided, x, style, short_side=24, max_long_side=None, size_divisor=8, **extra)
        assert out.shape == (1, 5, 37, 53)
    # whole at the image's own size with a pointwise model is the model itself
    same = predict_logits(pointwise, x, "whole", short_side=37, max_long_side=None, size_divisor=1)
    torch.testing.assert_close(same, pointwise(x), rtol=0, atol=1e-5)
    with pytest.raises(ValueError):
        predict_logits(pointwise, x, "slide", short_side=24, max_long_side=None, size_divisor=1)


def test_short_side_size():
    assert short_side_size(480, 640, 640) == (640, 853)
    assert short_side_size(100, 1000, 640, max_long=2560) == (256, 2560)
