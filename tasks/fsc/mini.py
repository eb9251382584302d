"""The embedded `mini_coop` dataset: 12 synthetic classes in CoOp's DTD-like on-disk layout.

It lets the whole FSC path (real reader, sampling, task) run in CI without downloads. Classes differ by
shape, colour and texture, so a backbone has to see more than one cue; every image has its own background,
position, scale and rotation. One seeded numpy stream draws everything, so every run writes identical pixels.

The test split is larger than CoOp's shot counts need (40 per class, 480 images) because the suite is CI's
regression baseline: at 120 images one image moved top-1 by 0.83 points and its binomial standard error was
~4 points, too coarse for a noise-aware gate; at 480 it is ~2. Train (16) and val (4) per class are what
the 16-shot protocol needs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from harness.io import publish_tree

MINI_VERSION = "2"  # bump when the pixels or the split change; part of MiniCoOp.fingerprint()
SEED = 20251125
SIZE = 96
SPLIT_FILE = "split_zhou_MiniCoOp.json"
IMAGE_DIR = "images"
VERSION_FILE = ".mini_version"  # generator version + seed, to tell an identical tree from a stale one
PER_CLASS = {"train": 16, "val": 4, "test": 40}

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {"red": (215, 40, 40), "green": (40, 165, 60), "blue": (45, 85, 220)}
TEXTURES = ("solid", "striped", "dotted")
# 4 shapes x 3 colours, the texture rotating so each appears 4 times: 12 distinct (colour, texture, shape).
CLASSES: tuple[tuple[str, str, str], ...] = tuple(sorted(
    (colour, TEXTURES[(i + j) % 3], shape)
    for i, shape in enumerate(SHAPES)
    for j, colour in enumerate(COLOURS)
))
CLASSNAMES: tuple[str, ...] = tuple("_".join(c) for c in CLASSES)  # sorted, so label = index


def _outline(shape: str) -> np.ndarray:
    """Unit-radius polygon vertices of a shape, [N, 2]."""
    if shape == "circle":
        angles, radii = np.linspace(0, 2 * np.pi, 48, endpoint=False), np.ones(48)
    elif shape == "square":
        angles, radii = np.pi / 4 + np.arange(4) * np.pi / 2, np.full(4, 1.1)
    elif shape == "triangle":
        angles, radii = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3, np.full(3, 1.15)
    else:  # star
        angles, radii = -np.pi / 2 + np.arange(10) * np.pi / 5, np.tile([1.2, 0.5], 5)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _background(rng: np.random.Generator) -> np.ndarray:
    """A muted flat colour, linear gradient and/or noise, [H, W, 3] float."""
    def muted() -> np.ndarray:
        return rng.uniform(50, 200) + rng.uniform(-35, 35, size=3)

    kind = int(rng.integers(4))  # 0 flat, 1 gradient, 2 noise, 3 gradient + noise
    bg = np.broadcast_to(muted(), (SIZE, SIZE, 3)).astype(np.float64)
    if kind in (1, 3):
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
        t = (xx * np.cos(angle) + yy * np.sin(angle))
        t = ((t - t.min()) / (np.ptp(t) + 1e-9))[..., None]
        bg = bg * (1 - t) + muted() * t
    if kind in (2, 3):
        bg = bg + rng.normal(0, rng.uniform(6, 20), size=(SIZE, SIZE, 3))
    return bg


def _texture(texture: str, rng: np.random.Generator) -> np.ndarray:
    """Boolean [H, W]: True where the shape shows its colour, False where the light secondary tone shows."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    if texture == "striped":
        period, angle, phase = rng.uniform(7, 11), rng.uniform(0, np.pi), rng.uniform(0, 1)
        return ((xx * np.cos(angle) + yy * np.sin(angle)) / period + phase) % 1 < 0.5
    if texture == "dotted":
        period, ox, oy = rng.uniform(8, 12), rng.uniform(0, 12), rng.uniform(0, 12)
        dx, dy = (xx + ox) % period - period / 2, (yy + oy) % period - period / 2
        return dx**2 + dy**2 > (0.3 * period) ** 2
    return np.ones((SIZE, SIZE), dtype=bool)


def render(colour: str, texture: str, shape: str, rng: np.random.Generator) -> Image.Image:
    """One 96x96 RGB image of a class; every random draw comes from `rng`, in a fixed order."""
    bg = _background(rng)
    radius = rng.uniform(18, 32)
    centre = rng.uniform(radius, SIZE - radius, size=2)
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    pts = (_outline(shape) @ rot.T * radius + centre) * 2  # drawn at 2x, then box-filtered: anti-aliased edge
    mask_img = Image.new("L", (2 * SIZE, 2 * SIZE), 0)
    ImageDraw.Draw(mask_img).polygon([(float(x), float(y)) for x, y in pts], fill=255)
    mask = np.asarray(mask_img.resize((SIZE, SIZE), Image.Resampling.BOX), dtype=np.float64)[..., None] / 255
    main = np.array(COLOURS[colour], dtype=np.float64) + rng.uniform(-25, 25, size=3)
    light = rng.uniform(215, 250) + rng.uniform(-10, 10, size=3)
    fg = np.where(_texture(texture, rng)[..., None], main, light)
    out = bg * (1 - mask) + fg * mask
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


def _write(folder: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    split: dict[str, list[list[object]]] = {s: [] for s in PER_CLASS}
    for label, (cname, triple) in enumerate(zip(CLASSNAMES, CLASSES, strict=True)):
        (folder / IMAGE_DIR / cname).mkdir(parents=True)
        n = 0
        for split_name, count in PER_CLASS.items():
            for _ in range(count):
                n += 1
                rel = f"{cname}/{cname}_{n:04d}.png"
                render(*triple, rng).save(folder / IMAGE_DIR / rel, format="PNG")
                split[split_name].append([rel, label, cname])
    # CoOp's save_split writes json with indent=4 and these separators.
    (folder / SPLIT_FILE).write_text(json.dumps(split, indent=4, separators=(",", ": ")))
    (folder / VERSION_FILE).write_text(f"{MINI_VERSION} {seed}\n")


def _same(a: Path, b: Path) -> bool:
    """Whether two trees hold the same split from the same generator version and seed."""
    files = (SPLIT_FILE, VERSION_FILE)
    return all((a / f).is_file() and (a / f).read_bytes() == (b / f).read_bytes() for f in files)


def generate(root: Path, seed: int = SEED) -> None:
    """Write the dataset to `root` via a temp sibling folder and a rename, so a reader never sees half a
    dataset. An identical tree already there (same split, version and seed: a concurrent or earlier run)
    is kept untouched, so readers of it are never disturbed; any other tree at `root` is replaced."""
    publish_tree(root, lambda tmp: _write(tmp, seed), _same)
