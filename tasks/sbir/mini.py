"""The embedded `mini_sbir` dataset: 10 synthetic shape classes in the Sketchy Extended on-disk layout.

It lets the whole SBIR path (real reader, training on seen classes, retrieval on unseen ones) run in CI
without downloads. A class is a shape. Photos fill it with a random colour and texture over a varied
background (so colour and texture are no cue); sketches draw only its outline with jittered, doubled,
sometimes broken dark strokes on white (so the sketch → photo gap is a real domain gap). 7 classes are
seen, 3 unseen. One seeded numpy stream draws everything, so every run writes identical pixels.

The unseen side is sized so that every reported metric can move (it is CI's regression baseline): each
unseen class has more gallery photos than the largest K (200), so P@100, P@200 and mAP@200 are not capped
and mAP@200 differs from mAP@all; the unseen classes have unequal numbers of query sketches, so the class
average differs from the query average. Some images are harder than others (small, cluttered, occluded or
low-contrast photos; small, broken, partial or scribbled-over sketches), so queries range from easy to hard
instead of all being alike. Only the unseen gallery is large: the seen (training) side stays small.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from harness.io import publish_tree

MINI_VERSION = "2"  # bump when the pixels or the lists change; part of MiniSBIR.fingerprint()
SEED = 20251126
SIZE = 64
SPLIT_DIR = "zeroshot1"
SKETCH_DIR = "256x256/sketch/tx_000000000000_ready"
PHOTO_DIR = "256x256/photo/tx_000000000000_ready"
EXTEND_DIR = "EXTEND_image_sketchy_ready"
VERSION_FILE = ".mini_version"
SKETCHES_PER_PHOTO = 2  # sketches drawn of each photo in 256x256/photo
ORIGINALS = 6  # seen classes: photos per class in 256x256/photo (each with its sketches)
EXTENDED = 6  # seen classes: extra photos per class in EXTEND_image_sketchy_ready (no sketches)
TOP_K = 200  # the largest K the SBIR metrics cut at (mAP@200, P@200)
HARD_P = 0.3  # chance of each difficulty factor, drawn independently per image

SHAPES = ("circle", "square", "triangle", "star", "house", "arrow", "diamond", "hexagon", "plus sign", "heart")
UNSEEN: tuple[str, ...] = ("diamond", "hexagon", "plus sign")  # names with spaces exercise the parser
SEEN: tuple[str, ...] = tuple(s for s in SHAPES if s not in UNSEEN)
# Unseen classes: (photos with sketches, extended photos). Galleries of 212 / 236 / 258 (all > TOP_K) and
# 28 / 40 / 56 query sketches.
UNSEEN_COUNTS: dict[str, tuple[int, int]] = {"diamond": (14, 198), "hexagon": (20, 216), "plus sign": (28, 230)}


def counts(shape: str) -> tuple[int, int]:
    """(original photos, extended photos) of a class."""
    return UNSEEN_COUNTS.get(shape, (ORIGINALS, EXTENDED))


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


def _coverage(canvas: Image.Image) -> np.ndarray:
    """A mask drawn at 2x, box-filtered to SIZE: anti-aliased coverage [H, W, 1] in 0..1."""
    return np.asarray(canvas.resize((SIZE, SIZE), Image.Resampling.BOX), dtype=np.float64)[..., None] / 255


def _clutter(out: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """2-4 blobs and bars in random colours over `out` (painted before the shape: background clutter)."""
    for _ in range(int(rng.integers(2, 5))):
        canvas = Image.new("L", (2 * SIZE, 2 * SIZE), 0)
        x, y = rng.uniform(0, 2 * SIZE, size=2)
        rx, ry = rng.uniform(6, 18, size=2)
        if rng.uniform() < 0.5:
            ImageDraw.Draw(canvas).ellipse([x - rx, y - ry, x + rx, y + ry], fill=255)
        else:
            ImageDraw.Draw(canvas).line([(x - rx, y - ry), (x + rx, y + ry)], fill=255, width=int(rng.integers(3, 9)))
        mask = _coverage(canvas)
        out = out * (1 - mask) + rng.uniform(20, 235, size=3) * mask
    return out


def _occluder(pts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Coverage of a rotated bar that hides part of the shape whose 2x outline is `pts` (never all of it)."""
    centre, radius = (pts.max(0) + pts.min(0)) / 2, np.ptp(pts, axis=0).max() / 2
    angle = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    mid = centre + direction * radius * rng.uniform(0.5, 0.9)
    half = radius * rng.uniform(0.4, 0.75, size=2)
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
    rot = np.array([[direction[0], -direction[1]], [direction[1], direction[0]]])
    canvas = Image.new("L", (2 * SIZE, 2 * SIZE), 0)
    ImageDraw.Draw(canvas).polygon([(float(x), float(y)) for x, y in corners @ rot.T + mid], fill=255)
    return _coverage(canvas)


def render_photo(shape: str, rng: np.random.Generator) -> Image.Image:
    """A filled, coloured, textured shape over a varied background; every draw comes from `rng`.

    Each difficulty factor is drawn independently: a small shape, background clutter, a bar occluding
    part of the shape, a fill close to the background colour (low contrast).
    """
    small, clutter, occluded, faint = rng.uniform(size=4) < HARD_P
    bg = _background(rng)
    if clutter:
        bg = _clutter(bg, rng)
    pts = _place(shape, rng, *((8, 13) if small else (14, 24))) * 2  # drawn at 2x, then box-filtered
    canvas = Image.new("L", (2 * SIZE, 2 * SIZE), 0)
    ImageDraw.Draw(canvas).polygon([(float(x), float(y)) for x, y in pts], fill=255)
    mask = _coverage(canvas)
    if faint:
        main = (bg * mask).sum((0, 1)) / max(mask.sum(), 1e-9) + rng.uniform(-30, 30, size=3)
        light = main + rng.uniform(-20, 20, size=3)
    else:
        main = rng.uniform(20, 235, size=3)
        light = rng.uniform(200, 250) + rng.uniform(-10, 10, size=3)
    fg = np.where(_texture(rng)[..., None], main, light)
    out = bg * (1 - mask) + fg * mask
    if occluded:
        cover = _occluder(pts, rng)
        out = out * (1 - cover) + rng.uniform(20, 235, size=3) * cover
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


def _densify(pts: np.ndarray, step: float) -> np.ndarray:
    """Points every ~`step` px along the closed polygon."""
    out = []
    for a, b in zip(pts, np.roll(pts, -1, axis=0), strict=True):
        n = max(2, int(np.ceil(np.linalg.norm(b - a) / step)))
        out.append(a + (b - a) * np.linspace(0, 1, n, endpoint=False)[:, None])
    return np.concatenate(out)


def _gaps(n: int, rng: np.random.Generator, broken: bool) -> np.ndarray:
    """Boolean [n]: segments of one stroke left out. Usually none or one short gap; `broken`: 2-4 longer ones."""
    skip = np.zeros(n, dtype=bool)
    count = int(rng.integers(2, 5)) if broken else int(rng.uniform() < 0.4)
    for _ in range(count):
        at, length = int(rng.integers(n)), int(rng.integers(3, 8) if broken else rng.integers(2, 5))
        skip[(at + np.arange(length)) % n] = True
    return skip


def render_sketch(shape: str, rng: np.random.Generator) -> Image.Image:
    """Only the outline: one or two wobbly dark strokes, sometimes with gaps, on white (no fill).

    Each difficulty factor is drawn independently: a small sketch, strokes broken in several places, a
    part of the outline never drawn (the same part in every stroke), stray scribbles.
    """
    small, broken, partial, scribbled = rng.uniform(size=4) < HARD_P
    base = _densify(_place(shape, rng, *((9, 13) if small else (14, 26))), step=3.0)
    scale = 4  # drawn at 4x, then box-filtered
    img = Image.new("L", (SIZE * scale, SIZE * scale), 255)
    draw = ImageDraw.Draw(img)
    ink = int(rng.integers(0, 70))
    missing = np.zeros(len(base), dtype=bool)
    if partial:
        at, length = int(rng.integers(len(base))), int(len(base) * rng.uniform(0.2, 0.35))
        missing[(at + np.arange(length)) % len(base)] = True
    for _ in range(int(rng.integers(1, 3))):
        wobble = np.cumsum(rng.normal(0, 0.35, size=base.shape), axis=0)
        wobble -= np.linspace(0, 1, len(base))[:, None] * wobble[-1]  # the stroke closes on itself
        pts = (base + wobble + rng.normal(0, 0.6, size=2)) * scale
        width = int(rng.integers(scale, 2 * scale + 1))
        skip = missing | _gaps(len(pts), rng, bool(broken))
        closed = np.concatenate([pts, pts[:1]])
        for i in range(len(closed) - 1):
            if not skip[i]:
                draw.line([tuple(closed[i]), tuple(closed[i + 1])], fill=ink, width=width)
    if scribbled:
        for _ in range(int(rng.integers(1, 4))):
            start = rng.uniform(4, SIZE - 4, size=2)
            steps = np.cumsum(rng.normal(0, 2.5, size=(int(rng.integers(3, 7)), 2)), axis=0)
            line = np.clip(start + steps, 1, SIZE - 1) * scale
            draw.line([tuple(p) for p in line], fill=ink, width=int(rng.integers(scale, 2 * scale + 1)))
    return img.resize((SIZE, SIZE), Image.Resampling.BOX).convert("RGB")


def _write(folder: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lists: dict[str, list[str]] = {f"{dom}_{part}": [] for dom in ("sketch", "photo") for part in ("train", "zero")}
    for cid, shape in enumerate(SHAPES):
        part = "zero" if shape in UNSEEN else "train"
        label = (UNSEEN if part == "zero" else SEEN).index(shape)
        for sub in (SKETCH_DIR, PHOTO_DIR, EXTEND_DIR):
            (folder / sub / shape).mkdir(parents=True)
        originals, extended = counts(shape)
        for k in range(originals):
            photo_id = f"n{cid:08d}_{k + 1}"
            rel = f"{PHOTO_DIR}/{shape}/{photo_id}.jpg"
            render_photo(shape, rng).save(folder / rel, format="JPEG", quality=90)
            lists[f"photo_{part}"].append(f"{rel} {label}")
            for n in range(SKETCHES_PER_PHOTO):
                rel = f"{SKETCH_DIR}/{shape}/{photo_id}-{n + 1}.png"
                render_sketch(shape, rng).save(folder / rel, format="PNG")
                lists[f"sketch_{part}"].append(f"{rel} {label}")
        for k in range(extended):
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
