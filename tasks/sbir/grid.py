"""The qualitative artifact: query sketches and their top-10 photos, correct ones framed green, wrong red.

A number on a leaderboard hides *how* retrieval fails (same shape, wrong class? background bias?); a
grid of a few fixed queries shows it at a glance and is logged to MLflow with the run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from harness.api import ImageItem

THUMB = 96
BORDER = 4
GAP = 12
CAPTION = 14
GREEN = (20, 170, 40)
RED = (210, 30, 30)
QUERY = (60, 60, 60)


def pick_queries(n_queries: int, n: int) -> list[int]:
    """`n` query indices spread evenly over the list (file lists are grouped by class, so over classes too)."""
    if n <= 0 or n_queries == 0:
        return []
    return sorted(set(np.linspace(0, n_queries - 1, min(n, n_queries)).round().astype(int).tolist()))


def _framed(image: Image.Image, colour: tuple[int, int, int]) -> Image.Image:
    inner = THUMB - 2 * BORDER
    tile = Image.new("RGB", (THUMB, THUMB), colour)
    tile.paste(image.convert("RGB").resize((inner, inner), Image.Resampling.BILINEAR), (BORDER, BORDER))
    return tile


def render_grid(rows: Sequence[int], queries: Sequence[ImageItem], gallery: Sequence[ImageItem],
                top: np.ndarray, load: Callable[[ImageItem], Image.Image], path: Path) -> Path:
    """One row per query index in `rows`: the sketch, a gap, then its ranked photos (`top[row]`)."""
    n_cols = top.shape[1] if len(top) else 0
    width = THUMB + GAP + n_cols * THUMB
    height = max(1, len(rows)) * (THUMB + CAPTION)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for r, q in enumerate(rows):
        y = r * (THUMB + CAPTION)
        query = queries[q]
        canvas.paste(_framed(load(query), QUERY), (0, y))
        draw.text((2, y + THUMB + 1), query.classname[:16], fill=(0, 0, 0))
        for c, g in enumerate(top[q]):
            photo = gallery[int(g)]
            colour = GREEN if photo.label == query.label else RED
            canvas.paste(_framed(load(photo), colour), (THUMB + GAP + c * THUMB, y))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return path
