"""The embedded `mini_sbir` dataset: 10 synthetic shape classes in the Sketchy Extended on-disk layout.

It lets the whole SBIR path (real reader, training on seen classes, retrieval on unseen ones) run in CI
without downloads. A class is a shape. Photos fill it with a random colour and texture over a varied
background (so colour and texture are no cue); sketches draw only its outline with jittered, doubled,
sometimes broken dark strokes on white (so the sketch → photo gap is a real domain gap). 7 classes are
seen, 3 unseen. One seeded numpy stream draws everything, so every run writes identical pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from harness.io import publish_tree

MINI_VERSION = "1"  # bump when the pixels or the lists change; part of MiniSBIR.fingerprint()
SEED = 20251126
SIZE = 64
SPLIT_DIR = "zeroshot1"
SKETCH_DIR = "256x256/sketch/tx_000000000000_ready"
PHOTO_DIR = "256x256/photo/tx_000000000000_ready"
EXTEND_DIR = "EXTEND_image_sketchy_ready"
VERSION_FILE = ".mini_version"
ORIGINALS = 6  # photos per class in 256x256/photo; each has SKETCHES_PER_PHOTO sketches
SKETCHES_PER_PHOTO = 2
EXTENDED = 6  # extra photos per class in EXTEND_image_sketchy_ready

SHAPES = ("circle", "square", "triangle", "star", "house", "arrow", "diamond", "hexagon", "plus sign", "heart")
UNSEEN: tuple[str, ...] = ("diamond", "hexagon", "plus sign")  # names with spaces exercise the parser
SEEN: tuple[str, ...] = tuple(s for s in SHAPES if s not in UNSEEN)


def outline(shape: str) -> np.ndarray:
    """Closed outline of a shape as unit-radius vertices [N, 2] (y down)."""
    def polar(angles: np.ndarray, radii: np.ndarray) -> np.ndarray:
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)

    if shape == "circle":
        return polar(np.linspace(0, 2 * np.pi, 40, endpoint=False), np.ones(40))
    if shape == "square":
        return polar(np.pi / 4 + np.arange(4) * np.pi / 2, np.full(4, 1.1))
    if shape == "triangle":
        return polar(-np.pi / 2 + np.arange(3) * 2 * np.pi / 3, np.full(3, 1.15))
    if shape == "star":
        return polar(-np.pi / 2 + np.arange(10) * np.pi / 5, np.tile([1.2, 0.48], 5))
    if shape == "hexagon":
        return polar(np.arange(6) * np.pi / 3, np.full(6, 1.05))
    if shape == "diamond":
        return np.array([[0, -1.2], [0.65, 0], [0, 1.2], [-0.65, 0]], dtype=np.float64)
    if shape == "house":
        return np.array([[-0.8, 1], [0.8, 1], [0.8, -0.1], [0, -1.05], [-0.8, -0.1]], dtype=np.float64)
    if shape == "arrow":
        return np.array([[-1, -0.3], [0.15, -0.3], [0.15, -0.8], [1.05, 0], [0.15, 0.8], [0.15, 0.3], [-1, 0.3]],
                        dtype=np.float64)
    if shape == "plus sign":
        a, b = 0.35, 1.05
        return np.array([[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b], [-a, a], [-b, a],
                         [-b, -a], [-a, -a]], dtype=np.float64)
    if shape == "heart":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return np.stack([x, y + 2.5], axis=1) / 15
    raise ValueError(f"unknown shape {shape!r}")


def _place(shape: str, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    """The outline at a random size, position and small rotation (large ones would merge classes), in px."""
    radius = rng.uniform(lo, hi)
    centre = rng.uniform(radius + 2, SIZE - radius - 2, size=2)
    theta = rng.uniform(-0.35, 0.35)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return outline(shape) @ rot.T * radius + centre


def _background(rng: np.random.Generator) -> np.ndarray:
    """A muted flat colour, a linear gradient and/or noise, [H, W, 3] float."""
    def muted() -> np.ndarray:
        return rng.uniform(40, 210) + rng.uniform(-40, 40, size=3)

    kind = int(rng.integers(4))  # 0 flat, 1 gradient, 2 noise, 3 gradient + noise
    bg = np.broadcast_to(muted(), (SIZE, SIZE, 3)).astype(np.float64)
    if kind in (1, 3):
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
        t = xx * np.cos(angle) + yy * np.sin(angle)
        t = ((t - t.min()) / (np.ptp(t) + 1e-9))[..., None]
        bg = bg * (1 - t) + muted() * t
    if kind in (2, 3):
        bg = bg + rng.normal(0, rng.uniform(5, 18), size=(SIZE, SIZE, 3))
    return bg


def _texture(rng: np.random.Generator) -> np.ndarray:
    """Boolean [H, W]: solid, striped or dotted (True where the main colour shows)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    kind = int(rng.integers(3))
    if kind == 1:
        period, angle, phase = rng.uniform(5, 9), rng.uniform(0, np.pi), rng.uniform(0, 1)
        return ((xx * np.cos(angle) + yy * np.sin(angle)) / period + phase) % 1 < 0.5
    if kind == 2:
        period, ox, oy = rng.uniform(6, 9), rng.uniform(0, 9), rng.uniform(0, 9)
        dx, dy = (xx + ox) % period - period / 2, (yy + oy) % period - period / 2
        return dx**2 + dy**2 > (0.3 * period) ** 2
    return np.ones((SIZE, SIZE), dtype=bool)


def render_photo(shape: str, rng: np.random.Generator) -> Image.Image:
    """A filled, coloured, textured shape over a varied background; every draw comes from `rng`."""
    bg = _background(rng)
    pts = _place(shape, rng, 14, 24) * 2  # drawn at 2x, then box-filtered: anti-aliased edge
    mask_img = Image.new("L", (2 * SIZE, 2 * SIZE), 0)
    ImageDraw.Draw(mask_img).polygon([(float(x), float(y)) for x, y in pts], fill=255)
    mask = np.asarray(mask_img.resize((SIZE, SIZE), Image.Resampling.BOX), dtype=np.float64)[..., None] / 255
    main = rng.uniform(20, 235, size=3)
    light = rng.uniform(200, 250) + rng.uniform(-10, 10, size=3)
    fg = np.where(_texture(rng)[..., None], main, light)
    out = bg * (1 - mask) + fg * mask
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


def _densify(pts: np.ndarray, step: float) -> np.ndarray:
    """Points every ~`step` px along the closed polygon."""
    out = []
    for a, b in zip(pts, np.roll(pts, -1, axis=0), strict=True):
        n = max(2, int(np.ceil(np.linalg.norm(b - a) / step)))
        out.append(a + (b - a) * np.linspace(0, 1, n, endpoint=False)[:, None])
    return np.concatenate(out)


def render_sketch(shape: str, rng: np.random.Generator) -> Image.Image:
    """Only the outline: one or two wobbly dark strokes, sometimes with gaps, on white (no fill)."""
    base = _densify(_place(shape, rng, 14, 26), step=3.0)
    scale = 4  # drawn at 4x, then box-filtered
    img = Image.new("L", (SIZE * scale, SIZE * scale), 255)
    draw = ImageDraw.Draw(img)
    ink = int(rng.integers(0, 70))
    for _ in range(int(rng.integers(1, 3))):
        wobble = np.cumsum(rng.normal(0, 0.35, size=base.shape), axis=0)
        wobble -= np.linspace(0, 1, len(base))[:, None] * wobble[-1]  # the stroke closes on itself
        pts = (base + wobble + rng.normal(0, 0.6, size=2)) * scale
        width = int(rng.integers(scale, 2 * scale + 1))
        gap_at = int(rng.integers(len(pts))) if rng.uniform() < 0.4 else -1
        gap_len = int(rng.integers(2, 5))
        closed = np.concatenate([pts, pts[:1]])
        for i in range(len(closed) - 1):
            if gap_at >= 0 and 0 <= i - gap_at < gap_len:
                continue
            draw.line([tuple(closed[i]), tuple(closed[i + 1])], fill=ink, width=width)
    small = img.resize((SIZE, SIZE), Image.Resampling.BOX)
    return small.convert("RGB")


def _write(folder: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lists: dict[str, list[str]] = {f"{dom}_{part}": [] for dom in ("sketch", "photo") for part in ("train", "zero")}
    for cid, shape in enumerate(SHAPES):
        part = "zero" if shape in UNSEEN else "train"
        label = (UNSEEN if part == "zero" else SEEN).index(shape)
        for sub in (SKETCH_DIR, PHOTO_DIR, EXTEND_DIR):
            (folder / sub / shape).mkdir(parents=True)
        for k in range(ORIGINALS):
            photo_id = f"n{cid:08d}_{k + 1}"
            rel = f"{PHOTO_DIR}/{shape}/{photo_id}.jpg"
            render_photo(shape, rng).save(folder / rel, format="JPEG", quality=90)
            lists[f"photo_{part}"].append(f"{rel} {label}")
            for n in range(SKETCHES_PER_PHOTO):
                rel = f"{SKETCH_DIR}/{shape}/{photo_id}-{n + 1}.png"
                render_sketch(shape, rng).save(folder / rel, format="PNG")
                lists[f"sketch_{part}"].append(f"{rel} {label}")
        for k in range(EXTENDED):
            rel = f"{EXTEND_DIR}/{shape}/ext_{k + 1}.jpg"
            render_photo(shape, rng).save(folder / rel, format="JPEG", quality=90)
            lists[f"photo_{part}"].append(f"{rel} {label}")
    split = folder / SPLIT_DIR
    split.mkdir()
    (split / "cname_cid.txt").write_text("".join(f"{c} {i}\n" for i, c in enumerate(SEEN)))
    (split / "cname_cid_zero.txt").write_text("".join(f"{c} {i}\n" for i, c in enumerate(UNSEEN)))
    for part in ("train", "zero"):
        (split / f"sketch_tx_000000000000_ready_filelist_{part}.txt").write_text(
            "".join(line + "\n" for line in lists[f"sketch_{part}"]))
        (split / f"all_photo_filelist_{part}.txt").write_text("".join(line + "\n" for line in lists[f"photo_{part}"]))
    (folder / VERSION_FILE).write_text(f"{MINI_VERSION} {seed}\n")


def _same(a: Path, b: Path) -> bool:
    """Whether two trees come from the same generator version and seed with the same lists."""
    names = [VERSION_FILE] + [f"{SPLIT_DIR}/{p.name}" for p in sorted((b / SPLIT_DIR).glob("*.txt"))]
    return all((a / f).is_file() and (a / f).read_bytes() == (b / f).read_bytes() for f in names)


def generate(root: Path, seed: int = SEED) -> None:
    """Write the dataset to `root` via a temp sibling folder and a rename, so a reader never sees half a
    dataset. An identical tree already there is kept untouched; any other tree at `root` is replaced."""
    publish_tree(root, lambda tmp: _write(tmp, seed), _same)
