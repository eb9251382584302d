"""`harness data verify NAME --deep`: decode every image of a prepared dataset and name the bad files.

Plain `verify` only checks that the listed files exist (cheap enough to run before every suite). A file can
exist and still be unusable; the deep check finds those before a run spends hours reaching them:

- **missing**: listed by the split files but not there (a dangling symlink included);
- **empty**: 0 bytes;
- **malformed**: not a regular file, not an image Pillow can identify, a zero-size image, or a decode that
  fails (a truncated file: `ImageFile.LOAD_TRUNCATED_IMAGES` stays False and `load()` decodes every pixel);
  for segmentation sets also a label map whose size differs from its image's;
- **oversized**: more than `MAX_PIXELS` pixels, read from the header without decoding a pixel. The limit is
  Pillow's default decompression-bomb limit, the one `harness.data.images.open_rgb` enforces during a run, so
  a file the deep check passes is one a run can decode;
- **out-of-tree**: a path or symlink that resolves outside the dataset's folder to something that is not a
  decodable image (a link to /etc/passwd, a device, a FIFO: those are never opened, they would block or
  read forever). A link outside to a regular file that decodes is fine (ImageNet's prepare steps allow
  links to an existing copy): it is counted and listed as *linked outside*, not as a problem.

Each file is checked once, whatever the number of splits that list it, in worker processes (spawned: the
caller may hold torch threads) that receive only paths and return one small tuple per file.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import HarnessError

if TYPE_CHECKING:  # pragma: no cover
    from harness.api import Dataset

# Pillow's default Image.MAX_IMAGE_PIXELS (int(1024 * 1024 * 1024 // 4 // 3)); fixed here so the limit does
# not move with another library's setting of the global.
MAX_PIXELS = 89_478_485
CATEGORIES = ("missing", "empty", "malformed", "oversized", "out-of-tree")
LINKED = "linked outside"  # not a problem: a whole image reached through a link out of the tree
CHUNK = 64  # paths per task sent to a worker: few enough round trips, even spread over the workers


@dataclass(frozen=True)
class Finding:
    category: str  # one of CATEGORIES
    path: Path
    why: str


@dataclass
class DeepReport:
    """What `deep_verify` found: `checked` files decoded or refused, and one finding per bad file."""

    root: Path
    checked: int
    findings: list[Finding] = field(default_factory=list)

    linked: list[Finding] = field(default_factory=list)  # whole images reached through links out of the tree

    @property
    def ok(self) -> bool:
        return not self.findings

    def counts(self) -> dict[str, int]:
        """Bad files per category, in CATEGORIES order, categories with none left out."""
        counts = {c: sum(f.category == c for f in self.findings) for c in CATEGORIES}
        return {c: n for c, n in counts.items() if n}

    def examples(self, category: str, n: int) -> list[Finding]:
        return [f for f in self.findings if f.category == category][:n]

    def summary(self, name: str) -> str:
        """The one line the command ends with."""
        if self.ok:
            linked = f" ({len(self.linked)} through links outside {self.root})" if self.linked else ""
            return f"{name}: {self.checked} images decoded, all fine{linked}"
        counts = ", ".join(f"{n} {c}" for c, n in self.counts().items())
        return (f"dataset '{name}': {len(self.findings)} of {self.checked} images are unusable ({counts}) under "
                f"{self.root}; replace or re-prepare them (harness data prepare {name})")


def _inside(real: str, root_real: str) -> bool:
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def check_file(path: str, root_real: str) -> tuple[str | None, str, tuple[int, int] | None]:
    """(category or None, why, (width, height) when decoded) for one file; never raises."""
    real = os.path.realpath(path)
    outside = not _inside(real, root_real)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing", "dangling symlink" if os.path.islink(path) else "no such file", None
    except OSError as exc:
        return "malformed", f"cannot stat it ({exc.strerror or exc})", None
    if outside:  # decoded only when it is a plain file; whatever fails, it fails as out-of-tree
        where = f"resolves to {real}, outside {root_real}"
        if not stat.S_ISREG(st.st_mode):
            return "out-of-tree", f"{where}; not a regular file", None
        category, why, size = _decode(path, st)
        return ("out-of-tree", f"{where}; {why}", None) if category else (LINKED, where, size)
    if not stat.S_ISREG(st.st_mode):
        return "malformed", "not a regular file", None
    return _decode(path, st)


def _decode(path: str, st: os.stat_result) -> tuple[str | None, str, tuple[int, int] | None]:
    """Header, size limit and a full decode of one regular file."""
    from PIL import Image, ImageFile, UnidentifiedImageError

    from harness.data.images import to_rgb

    if st.st_size == 0:
        return "empty", "0 bytes", None
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # the default; a caller must not have relaxed it for this check
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # reads the header only
                w, h = im.size
                if w * h > MAX_PIXELS:
                    return "oversized", f"{w}x{h} = {w * h / 1e6:.1f} MP, over {MAX_PIXELS / 1e6:.1f} MP", None
                if w <= 0 or h <= 0:
                    return "malformed", f"zero-size image ({w}x{h})", None
                im.load()  # every pixel: a truncated file fails here
                to_rgb(im).load()  # the conversion a run does (16-bit, CMYK, palette)
    except UnidentifiedImageError:
        return "malformed", "not an image file Pillow can decode", None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return "oversized", f"over Pillow's decompression-bomb limit ({exc})", None
    except Exception as exc:  # noqa: BLE001 (a decoder may fail in any way on damaged bytes: name the file)
        return "malformed", f"corrupt or truncated ({type(exc).__name__}: {exc})", None
    return None, "", (w, h)


def _check_chunk(paths: Sequence[str], root_real: str) -> list[tuple[str | None, str, tuple[int, int] | None]]:
    return [check_file(p, root_real) for p in paths]


def dataset_files(ds: Dataset) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """Every image file the dataset's reader lists (each once, in listing order), and the (image, label map)
    pairs of a segmentation set. Reading the lists raises the reader's own one-line errors (a missing split
    file, a label map without an image)."""
    from harness.api import ClassificationDataset

    if isinstance(ds, ClassificationDataset):
        paths = [ds.image_path(item) for items in ds.splits().values() for item in items]
        pairs: list[tuple[Path, Path]] = []
    elif callable(getattr(ds, "items", None)):  # segmentation: images and label maps paired by stem
        ds.classnames()  # the vocabulary, as plain verify reads it
        pairs = [(it.image, it.label) for it in ds.items()]
        paths = [p for pair in pairs for p in pair]
    else:
        raise HarnessError(f"dataset '{ds.name}': its reader lists no images the deep check can read "
                           f"({type(ds).__name__} has neither splits() nor items())")
    return list(dict.fromkeys(paths)), pairs


def _chunks(items: Sequence[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(items), n):
        yield list(items[i:i + n])


def deep_verify(ds: Dataset, workers: int | None = None) -> DeepReport:
    """Decode every image of `ds` in `workers` processes (default: `harness.data.inputs.default_workers()`;
    0 = in this process) and classify the bad ones."""
    from harness.data.inputs import default_workers

    files, pairs = dataset_files(ds)
    root_real = os.path.realpath(ds.root)
    names = [str(p) for p in files]
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise HarnessError(f"--workers must be >= 0, got {workers}")
    if workers == 0 or len(names) <= CHUNK:
        results = _check_chunk(names, root_real)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from functools import partial

        ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold torch threads
        with ProcessPoolExecutor(max_workers=min(workers, -(-len(names) // CHUNK)), mp_context=ctx) as pool:
            results = [r for chunk in pool.map(partial(_check_chunk, root_real=root_real), _chunks(names, CHUNK))
                       for r in chunk]
    report = DeepReport(root=Path(ds.root), checked=len(files))
    sizes = {}
    for path, (category, why, size) in zip(files, results, strict=True):
        if category == LINKED:
            report.linked.append(Finding(category, path, why))
            sizes[path] = size
        elif category is not None:
            report.findings.append(Finding(category, path, why))
        else:
            sizes[path] = size
    for image, label in pairs:
        if image in sizes and label in sizes and sizes[image] != sizes[label]:
            (iw, ih), (lw, lh) = sizes[image], sizes[label]
            report.findings.append(Finding("malformed", label, f"label map is {lw}x{lh} (WxH) but its image "
                                                               f"{image.name} is {iw}x{ih}"))
    return report
