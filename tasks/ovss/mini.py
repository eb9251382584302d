"""The embedded OVSS sets: `mini_ovss_train` (COCO-Stuff layout) and `mini_ovss` (ADEChallengeData2016 layout).

Each scene is two textured "stuff" regions split by a random line, with 2-4 coloured shape instances on top
(later ones occlude earlier ones). Labels are exact per pixel (no anti-aliasing in the masks). The training
set marks a one-pixel ring around each instance as 255 (COCO-Stuff's unlabelled boundary); the test set has
grey "other" blobs labelled raw 0, which the ADE reader turns into ignore. Some test classes never appear in
training, so the test vocabulary is really swapped, not just reused. One seeded numpy stream per set.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from harness.io import publish_tree

MINI_VERSION = "1"  # bump when pixels, labels or vocabularies change; part of the datasets' fingerprints
SIZE = 64
VERSION_FILE = ".mini_version"

# stuff: base colour, texture; things: colour, shape
STUFF = {"sky": ((110, 160, 230), "gradient"), "grass": ((60, 150, 60), "noise"),
         "sand": ((210, 190, 130), "dots"), "water": ((40, 90, 170), "stripes"),
         "snow": ((235, 235, 240), "noise")}
THINGS = {"red circle": ((220, 40, 40), "circle"), "blue square": ((40, 60, 220), "square"),
          "yellow triangle": ((230, 210, 40), "triangle"), "green star": ((30, 200, 90), "star"),
          "purple star": ((150, 50, 190), "star"), "orange circle": ((240, 140, 30), "circle")}
SETS = {
    "mini_ovss_train": {"classes": ("sky", "grass", "sand", "red circle", "blue square", "yellow triangle",
                                    "green star"),
                        "n": 40, "seed": 7101, "layout": "coco"},
    "mini_ovss": {"classes": ("sky", "grass", "water", "snow", "red circle", "blue square", "yellow triangle",
                              "purple star", "orange circle"),
                  "n": 20, "seed": 7102, "layout": "ade"},
}
LAYOUTS = {"coco": ("images/train2017", "annotations_detectron2/train2017", "{:012d}"),
           "ade": ("images/validation", "annotations/validation", "ADE_val_{:08d}")}


def _polygon(shape: str, centre: np.ndarray, radius: float, theta: float) -> list[tuple[float, float]]:
    if shape == "circle":
        angles, radii = np.linspace(0, 2 * np.pi, 32, endpoint=False), np.ones(32)
    elif shape == "square":
        angles, radii = np.pi / 4 + np.arange(4) * np.pi / 2, np.full(4, 1.2)
    elif shape == "triangle":
        angles, radii = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3, np.full(3, 1.25)
    else:  # star
        angles, radii = -np.pi / 2 + np.arange(10) * np.pi / 5, np.tile([1.3, 0.55], 5)
    angles = angles + theta
    return [(float(centre[0] + r * radius * np.cos(a)), float(centre[1] + r * radius * np.sin(a)))
            for a, r in zip(angles, radii, strict=True)]


def _mask(points: list[tuple[float, float]]) -> np.ndarray:
    img = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(img).polygon(points, fill=1)
    return np.asarray(img, dtype=bool)


def _texture(colour: tuple[int, int, int], kind: str, rng: np.random.Generator) -> np.ndarray:
    """[H, W, 3] float texture of a stuff class, jittered per image."""
    base = np.array(colour, dtype=np.float64) + rng.uniform(-15, 15, size=3)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    if kind == "gradient":
        shade = (yy / SIZE)[..., None] * rng.uniform(30, 60)
        return base + shade
    if kind == "stripes":
        period, phase = rng.uniform(5, 8), rng.uniform(0, 1)
        on = ((yy + 0.3 * xx) / period + phase) % 1 < 0.5
        return base + np.where(on, 35.0, -15.0)[..., None]
    if kind == "dots":
        period = rng.uniform(5, 7)
        dx, dy = xx % period - period / 2, yy % period - period / 2
        return base - np.where(dx**2 + dy**2 < (0.3 * period) ** 2, 50.0, 0.0)[..., None]
    return base + rng.normal(0, 18, size=(SIZE, SIZE, 1))


def render_scene(classes: tuple[str, ...], rng: np.random.Generator, layout: str) -> tuple[Image.Image, np.ndarray]:
    """One RGB scene and its label map in the layout's id convention (coco: 0..K-1 / 255; ade: 1..K / 0)."""
    stuff = [c for c in classes if c in STUFF]
    things = [c for c in classes if c in THINGS]
    offset = 0 if layout == "coco" else 1
    unlabelled = 255 if layout == "coco" else 0
    a, b = rng.choice(len(stuff), size=2, replace=False)
    # the split line: y = y0 + slope * x
    y0, slope = rng.uniform(0.3, 0.7) * SIZE, rng.uniform(-0.4, 0.4)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    top = yy < y0 + slope * xx
    image = np.where(top[..., None], _texture(*STUFF[stuff[a]], rng), _texture(*STUFF[stuff[b]], rng))
    label = np.where(top, classes.index(stuff[a]) + offset, classes.index(stuff[b]) + offset).astype(np.uint8)
    for _ in range(int(rng.integers(2, 5))):
        name = things[int(rng.integers(len(things)))]
        colour, shape = THINGS[name]
        radius = rng.uniform(6, 13)
        centre = rng.uniform(radius, SIZE - radius, size=2)
        mask = _mask(_polygon(shape, centre, radius, rng.uniform(0, 2 * np.pi)))
        fill = np.array(colour, dtype=np.float64) + rng.uniform(-20, 20, size=3)
        image = np.where(mask[..., None], fill + rng.normal(0, 6, size=(SIZE, SIZE, 3)), image)
        if layout == "coco":  # an unlabelled one-pixel ring, as COCO-Stuff's boundaries
            ring = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(3))) > 0
            label[ring & ~mask] = unlabelled
        label[mask] = classes.index(name) + offset
    if layout == "ade" and rng.uniform() < 0.6:  # a grey "other" blob: raw 0, ignored after the shift
        centre, radius = rng.uniform(8, SIZE - 8, size=2), rng.uniform(4, 8)
        mask = _mask(_polygon("circle", centre, radius, 0.0))
        image = np.where(mask[..., None], np.array([128.0, 128.0, 128.0]) + rng.normal(0, 5, (SIZE, SIZE, 3)), image)
        label[mask] = unlabelled
    return Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8), "RGB"), label


def _write(name: str, folder: Path) -> None:
    spec = SETS[name]
    image_dir, label_dir, stem_fmt = LAYOUTS[spec["layout"]]
    (folder / image_dir).mkdir(parents=True)
    (folder / label_dir).mkdir(parents=True)
    rng = np.random.default_rng(spec["seed"])
    for i in range(1, spec["n"] + 1):
        image, label = render_scene(spec["classes"], rng, spec["layout"])
        stem = stem_fmt.format(i)
        image.save(folder / image_dir / f"{stem}.jpg", format="JPEG", quality=95)
        Image.fromarray(label, "L").save(folder / label_dir / f"{stem}.png", format="PNG")
    (folder / "classnames.json").write_text(json.dumps(list(spec["classes"])) + "\n")
    (folder / VERSION_FILE).write_text(f"{MINI_VERSION} {spec['seed']}\n")


def _same(a: Path, b: Path) -> bool:
    return all((a / f).is_file() and (a / f).read_bytes() == (b / f).read_bytes()
               for f in (VERSION_FILE, "classnames.json"))


def generate(name: str, root: Path) -> None:
    """Write set `name` to `root` via a temp sibling and a rename, so no reader sees half a tree; an identical
    tree already there (same version, seed and vocabulary) is kept, any other is replaced."""
    if name not in SETS:
        raise ValueError(f"unknown mini OVSS set '{name}'; known: {', '.join(SETS)}")
    publish_tree(root, lambda tmp: _write(name, tmp), _same)
