"""Generated CoOp-layout datasets for the benchmarks that need real-scale image folders, made once and cached.

Both datasets are written in Caltech-101's CoOp layout (`caltech-101/101_ObjectCategories/<class>/*.jpg` plus
`split_zhou_Caltech101.json`), so the harness's real `caltech101` reader is what reads them. Generation is
seeded (one `numpy` stream per image, keyed by the image's class and index), so the same version string gives
the same bytes on every machine. Each dataset lives under `bench_data_root()/<name>-<version>/` (default
`~/.cache/harness-bench/`, or `$HARNESS_BENCH_DATA`): built in a hidden temporary folder, renamed into place
when complete, so a killed generation never leaves a half-written dataset behind; a lock file keeps two
processes from generating the same one at once.

- `scale_simulation_data()`: 100 classes, train 4,128 and val 1,649 (Caltech-101's published counts) and
  test 20,000 (200 per class), 64×48 JPEGs. Two dataset roots over the one image folder: `x4` (the whole
  test split) and `x1` (its first quarter per class: 5,000 test images, the same train and val).
- `decode_overlap_data()`: 480 photo-like 500×375 JPEGs at quality 90 (smooth gradients, shapes, sensor
  noise: the decoder does real work), 12 classes, train 240 / val 48 / test 192, all distinct.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SEED = 20_240_817
FOLDER = "caltech-101"  # the caltech101 reader's folder, image folder and split file
IMAGE_DIR = "101_ObjectCategories"
SPLIT_FILE = "split_zhou_Caltech101.json"
DONE = "DONE"

SCALE_VERSION = "scale-sim-v1"
SCALE_CLASSES = 100
SCALE_TRAIN, SCALE_VAL, SCALE_TEST_PER_CLASS = 4_128, 1_649, 200  # train/val: Caltech-101's published counts
SCALE_SIZE = (64, 48)

OVERLAP_VERSION = "decode-overlap-v1"
OVERLAP_CLASSES = 12
OVERLAP_PER_CLASS = {"train": 20, "val": 4, "test": 16}  # 40 per class, 480 images
OVERLAP_SIZE = (500, 375)
OVERLAP_QUALITY = 90


def bench_data_root() -> Path:
    """`$HARNESS_BENCH_DATA`, else `~/.cache/harness-bench`."""
    raw = os.environ.get("HARNESS_BENCH_DATA")
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "harness-bench"


def cached(name: str, build: Callable[[Path], None]) -> Path:
    """`bench_data_root()/name`, built by `build(tmp_folder)` on first use (atomic rename, under a lock)."""
    root = bench_data_root()
    final = root / name
    if (final / DONE).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / DONE).is_file():  # another process built it while this one waited
            return final
        tmp = root / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)  # an incomplete folder (no DONE marker)
        build(tmp)
        (tmp / DONE).write_text(f"{name} seed={SEED}\n")
        tmp.rename(final)
    return final


def class_names(n: int) -> list[str]:
    return [f"object_{i:03d}" for i in range(n)]


def write_split(dataset: Path, split: dict[str, list[list[object]]]) -> None:
    dataset.mkdir(parents=True, exist_ok=True)
    (dataset / SPLIT_FILE).write_text(json.dumps(split, indent=1))


def spread(total: int, n: int) -> list[int]:
    """`total` items over `n` classes, as evenly as possible (the first classes get one more)."""
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


# -- the scale simulation: small JPEGs, a class = a colour layout ------------------------------------------------
def _class_style(label: int) -> tuple[np.ndarray, int]:
    """Three colours and one of six layouts per class, from the class's own seeded stream."""
    rng = np.random.default_rng([SEED, 1, label])
    return rng.integers(20, 236, size=(3, 3)), label % 6


def render_small(label: int, index: int, size: tuple[int, int] = SCALE_SIZE) -> Image.Image:
    """The class's layout of its three colours, shifted and tinted a little per image, plus pixel noise."""
    colours, layout = _class_style(label)
    rng = np.random.default_rng([SEED, 2, label, index])
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    u, v = xx / w + rng.uniform(-0.08, 0.08), yy / h + rng.uniform(-0.08, 0.08)
    if layout == 0:
        region = (u > 0.5).astype(int) + (v > 0.5)
    elif layout == 1:
        region = np.minimum((u * 3).astype(int), 2)
    elif layout == 2:
        region = np.minimum((v * 3).astype(int), 2)
    elif layout == 3:
        region = ((u - 0.5) ** 2 + (v - 0.5) ** 2 < 0.09).astype(int) * 2
    elif layout == 4:
        region = ((u + v) > 1.0).astype(int) + ((u - v) > 0.2)
    else:
        region = (((u * 4).astype(int) + (v * 4).astype(int)) % 3)
    img = colours[np.clip(region, 0, 2)].astype(np.float64)
    img += rng.normal(0, 12, size=3) + rng.normal(0, 6, size=img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _build_scale(tmp: Path) -> None:
    x4 = tmp / "x4" / FOLDER
    names = class_names(SCALE_CLASSES)
    full: dict[str, list[list[object]]] = {"train": [], "val": [], "test": []}
    quarter: dict[str, list[list[object]]] = {"train": [], "val": [], "test": []}
    counts = {"train": spread(SCALE_TRAIN, SCALE_CLASSES), "val": spread(SCALE_VAL, SCALE_CLASSES),
              "test": [SCALE_TEST_PER_CLASS] * SCALE_CLASSES}
    for label, cname in enumerate(names):
        (x4 / IMAGE_DIR / cname).mkdir(parents=True)
        n = 0
        for split in ("train", "val", "test"):
            for k in range(counts[split][label]):
                n += 1
                rel = f"{cname}/image_{n:04d}.jpg"
                render_small(label, n).save(x4 / IMAGE_DIR / rel, format="JPEG", quality=90)
                full[split].append([rel, label, cname])
                if split != "test" or k < SCALE_TEST_PER_CLASS // 4:
                    quarter[split].append([rel, label, cname])
    write_split(x4, full)
    x1 = tmp / "x1" / FOLDER
    write_split(x1, quarter)
    (x1 / IMAGE_DIR).symlink_to(Path("..") / ".." / "x4" / FOLDER / IMAGE_DIR)  # relative: survives the rename


def scale_simulation_data() -> dict[str, Path]:
    """`{"x1": HARNESS_DATA root, "x4": HARNESS_DATA root}` of the scale simulation (generated on first use)."""
    root = cached(SCALE_VERSION, _build_scale)
    return {"x1": root / "x1", "x4": root / "x4"}


# -- the decode benchmark: photo-like 500x375 JPEGs -------------------------------------------------------------
def render_photo(label: int, index: int, size: tuple[int, int] = OVERLAP_SIZE) -> Image.Image:
    """A smooth colour field (a bilinear-upsampled 4×3 grid of the class's palette, jittered), a few filled
    ellipses and polygons, a slight blur, then Gaussian sensor noise: high-entropy content a JPEG codec works on
    like a photograph's (about 50 KB at quality 90)."""
    w, h = size
    palette = np.random.default_rng([SEED, 3, label]).integers(30, 226, size=(4, 3))
    rng = np.random.default_rng([SEED, 4, label, index])
    grid = palette[rng.integers(0, 4, size=(3, 4))] + rng.normal(0, 20, size=(3, 4, 3))
    field = Image.fromarray(np.clip(grid, 0, 255).astype(np.uint8)).resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(field)
    for _ in range(int(rng.integers(4, 9))):
        colour = tuple(int(c) for c in np.clip(palette[rng.integers(0, 4)] + rng.normal(0, 30, 3), 0, 255))
        x0, y0 = rng.uniform(-0.1, 0.9) * w, rng.uniform(-0.1, 0.9) * h
        x1, y1 = x0 + rng.uniform(0.05, 0.5) * w, y0 + rng.uniform(0.05, 0.5) * h
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            pts = [(float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1))) for _ in range(int(rng.integers(3, 7)))]
            draw.polygon(pts, fill=colour)
    field = field.filter(ImageFilter.GaussianBlur(1.2))
    arr = np.asarray(field, dtype=np.float32) + rng.normal(0, 7, size=(h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _build_overlap(tmp: Path) -> None:
    ds = tmp / FOLDER
    split: dict[str, list[list[object]]] = {s: [] for s in OVERLAP_PER_CLASS}
    for label, cname in enumerate(class_names(OVERLAP_CLASSES)):
        (ds / IMAGE_DIR / cname).mkdir(parents=True)
        n = 0
        for name, count in OVERLAP_PER_CLASS.items():
            for _ in range(count):
                n += 1
                rel = f"{cname}/image_{n:04d}.jpg"
                render_photo(label, n).save(ds / IMAGE_DIR / rel, format="JPEG", quality=OVERLAP_QUALITY)
                split[name].append([rel, label, cname])
    write_split(ds, split)


def decode_overlap_data() -> Path:
    """The HARNESS_DATA root of the decode benchmark's dataset (generated on first use)."""
    return cached(OVERLAP_VERSION, _build_overlap)
