"""Readers of the ZS-SBIR benchmarks in the SAKE-style file-list format (protocols.md §B.1).

Each dataset folder holds its images plus one or more split folders of text lists:
`<split_dir>/<domain list>_{train,zero}.txt` with lines `<relative/path> <int_label>` (paths relative to the
dataset folder, labels contiguous within each list) and `cname_cid.txt` / `cname_cid_zero.txt` with lines
`<class name> <id>`. Names and paths may contain spaces, so the label is always the *last* token.

Split folders are named differently in different repositories (`zeroshot0/1/2`), so a split is found by its
*content*: the folder whose `cname_cid_zero.txt` lists exactly the published unseen classes. The `_zero`
lists are read whole, never subsampled.

Items carry one label space per dataset: seen classes are 0..S-1 (the train lists' ids) and unseen classes
S..S+U-1 (the `_zero` lists' ids + S), so `classnames()[item.label] == item.classname` for every item and a
training label can never equal an unseen one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from harness.api import ClassificationDataset, ImageItem
from harness.catalog import register_dataset
from harness.io import canonical_json, sha256_file, sha256_text
from tasks.sbir import mini

PARTS = ("train", "zero")
SPLITS = ("sketch_train", "photo_train", "sketch_zero", "photo_zero")
SEEN_FILE = "cname_cid.txt"
UNSEEN_FILE = "cname_cid_zero.txt"
_SOURCES = (
    "The preprocessed 'extended' benchmarks with SAKE-style file lists are distributed by the SAKE repository\n"
    "(https://github.com/qliu24/SAKE, Sketchy + TU-Berlin) and the ZSE-SBIR repository (Lin et al. CVPR'23,\n"
    "Sketchy + TU-Berlin + QuickDraw; its README links the archives). Extract so that the lists' relative\n"
    "paths resolve against the dataset folder."
)


def normalise_name(name: str) -> str:
    """Compare class names across repositories: case, spaces, underscores and hyphens ignored."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


class SBIRDataset(ClassificationDataset):
    """What every SAKE-style reader shares: split-folder discovery, list parsing, checks, fingerprint."""

    task_family: ClassVar[str] = "sbir"
    split_dirs: ClassVar[tuple[str, ...]]  # candidate split folders; the one whose unseen classes match is used
    sketch_list: ClassVar[str]  # file-list name with `{}` for train / zero
    photo_list: ClassVar[str]
    unseen_classes: ClassVar[tuple[str, ...]]  # the published unseen class list (protocols.md §B.1)
    published_counts: ClassVar[tuple[int, int] | None] = None  # (query sketches, gallery photos) in the _zero lists
    # Images per list (harness.plan.cost, before the data is there): the _zero lists as counted above; a train list
    # only where protocols.md gives its length (left out: unknown).
    templates: ClassVar[tuple[str, ...]] = ("a photo of a {}.",)

    def __init__(self, root: Path):
        super().__init__(root)
        self._split_dir: str | None = None
        self._splits: dict[str, list[ImageItem]] | None = None
        self._seen: list[str] | None = None
        self._unseen: list[str] | None = None

    # -- split discovery -------------------------------------------------------------------------
    def split_dir(self) -> str:
        """The split folder whose `cname_cid_zero.txt` names exactly this dataset's unseen classes."""
        if self._split_dir is not None:
            return self._split_dir
        self._require_root()
        want = sorted(normalise_name(c) for c in self.unseen_classes)
        found: dict[str, list[str]] = {}
        for cand in self.split_dirs:
            path = self.root / cand / UNSEEN_FILE
            if path.is_file():
                names = sorted(normalise_name(c) for c in self._read_classes(path))
                if names == want:
                    self._split_dir = cand
                    return cand
                found[cand] = names
        if not found:
            raise self._missing(self.root / self.split_dirs[0] / UNSEEN_FILE,
                                f"the unseen class list (looked in {', '.join(self.split_dirs)})")
        detail = "; ".join(f"{d}: {len(n)} classes ({', '.join(n[:4])}, ...)" for d, n in found.items())
        raise self._malformed(self.root / next(iter(found)) / UNSEEN_FILE,
                              f"no split folder lists the {len(want)} unseen classes of {self.name} "
                              f"({', '.join(self.unseen_classes[:4])}, ...); found {detail}")

    def list_files(self) -> dict[str, Path]:
        """`{"sketch_train": path, ...}` of the resolved split folder."""
        base = self.root / self.split_dir()
        return {f"{dom}_{part}": base / pattern.format(part)
                for part in PARTS for dom, pattern in (("sketch", self.sketch_list), ("photo", self.photo_list))}

    def defining_files(self) -> list[Path]:
        base = self.root / self.split_dir()
        return [base / SEEN_FILE, base / UNSEEN_FILE, *self.list_files().values()]

    # -- parsing --------------------------------------------------------------------------------
    def _read_classes(self, path: Path) -> list[str]:
        """`<class name> <id>` lines → names indexed by id; ids must be 0..n-1, names unique."""
        self._require_file(path, "a class list")
        by_id: dict[int, str] = {}
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.strip().rsplit(None, 1)
            if len(parts) != 2 or not re.fullmatch(r"\d+", parts[1]):
                raise self._malformed(path, f"line {lineno}: expected '<class name> <int id>', got {line!r}")
            name, cid = parts[0].strip(), int(parts[1])
            if cid in by_id:
                raise self._malformed(path, f"line {lineno}: id {cid} is listed twice")
            by_id[cid] = name
        if not by_id:
            raise self._malformed(path, "no classes listed")
        if sorted(by_id) != list(range(len(by_id))):
            raise self._malformed(path, f"ids are not contiguous 0..{len(by_id) - 1}")
        names = [by_id[i] for i in range(len(by_id))]
        if len({normalise_name(n) for n in names}) != len(names):
            raise self._malformed(path, "a class name is listed twice")
        return names

    def _read_list(self, path: Path, classnames: list[str], offset: int, class_file: Path) -> list[ImageItem]:
        """`<relative/path> <int_label>` lines; the label must be an id of `class_file`."""
        self._require_file(path, "a file list")
        items = []
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.strip().rsplit(None, 1)
            if len(parts) != 2 or not re.fullmatch(r"-?\d+", parts[1]):
                raise self._malformed(path, f"line {lineno}: expected '<relative/path> <int label>', got {line!r}")
            rel, label = parts[0].strip().removeprefix("./"), int(parts[1])
            if rel.startswith("/") or ".." in Path(rel).parts:
                raise self._malformed(path, f"line {lineno}: path {rel!r} is not relative to the dataset folder")
            if not 0 <= label < len(classnames):
                raise self._malformed(path, f"line {lineno}: unknown class id {label} "
                                            f"({class_file.name} has ids 0..{len(classnames) - 1})")
            items.append(ImageItem(path=rel, label=offset + label, classname=classnames[label]))
        if not items:
            raise self._malformed(path, "no images listed")
        return items

    def _read(self) -> None:
        base = self.root / self.split_dir()
        seen_file, unseen_file = base / SEEN_FILE, base / UNSEEN_FILE
        seen, unseen = self._read_classes(seen_file), self._read_classes(unseen_file)
        overlap = sorted({normalise_name(c) for c in seen} & {normalise_name(c) for c in unseen})
        if overlap:
            raise self._malformed(seen_file, f"seen classes that are also unseen in {unseen_file.name}: "
                                             f"{', '.join(overlap[:10])}")
        files = self.list_files()
        splits = {}
        for key, path in files.items():
            zero = key.endswith("_zero")
            splits[key] = self._read_list(path, unseen if zero else seen, len(seen) if zero else 0,
                                          unseen_file if zero else seen_file)
        missing = sorted(set(range(len(seen), len(seen) + len(unseen))) - {it.label for it in splits["photo_zero"]})
        if missing:
            names = [unseen[m - len(seen)] for m in missing]
            raise self._malformed(files["photo_zero"], f"unseen classes without a gallery photo: {', '.join(names)}")
        self._seen, self._unseen, self._splits = seen, unseen, splits

    # -- the interface ---------------------------------------------------------------------------
    def splits(self) -> dict[str, list[ImageItem]]:
        """`sketch_train`, `photo_train` (seen classes) and `sketch_zero`, `photo_zero` (unseen), as listed."""
        if self._splits is None:
            self._read()
        assert self._splits is not None
        return {k: list(v) for k, v in self._splits.items()}

    def seen_classnames(self) -> list[str]:
        self.splits()
        assert self._seen is not None
        return list(self._seen)

    def unseen_classnames(self) -> list[str]:
        self.splits()
        assert self._unseen is not None
        return list(self._unseen)

    def classnames(self) -> list[str]:
        """Seen classes then unseen ones, indexed by item label."""
        return self.seen_classnames() + self.unseen_classnames()

    def image_path(self, item: ImageItem) -> Path:
        return self.root / item.path

    def fingerprint(self) -> str:
        """sha256 over the class lists and file lists of the split folder (no image is read)."""
        digests = {}
        for path in self.defining_files():
            self._require_file(path, "a class list or file list")
            digests[path.relative_to(self.root).as_posix()] = sha256_file(path)
        return sha256_text(canonical_json(digests))

    def verify(self) -> None:
        """Re-read the lists from disk, then check that every listed image exists."""
        self._split_dir = self._splits = self._seen = self._unseen = None
        splits = self.splits()
        files = self.list_files()
        for key, items in splits.items():
            for i, item in enumerate(items):
                path = self.image_path(item)
                if not path.is_file():
                    raise self._missing(path, f"image {i + 1} of {files[key].relative_to(self.root)}")


# -- the real benchmarks ----------------------------------------------------------------------


SKETCHY_HINT = (
    f"{_SOURCES}\nLayout (protocols.md §B.1):\n"
    "  $HARNESS_DATA/Sketchy/256x256/sketch/tx_000000000000_ready/<class>/<photoid>-<n>.png\n"
    "  $HARNESS_DATA/Sketchy/256x256/photo/tx_000000000000_ready/<class>/<photoid>.jpg\n"
    "  $HARNESS_DATA/Sketchy/EXTEND_image_sketchy_ready/<class>/ext_<n>.jpg\n"
    "  $HARNESS_DATA/Sketchy/<zeroshotN>/{cname_cid.txt, cname_cid_zero.txt,\n"
    "      sketch_tx_000000000000_ready_filelist_{train,zero}.txt, all_photo_filelist_{train,zero}.txt}\n"
    "Keep both split folders: the 25-class random split (SAKE zeroshot1) and the 21-class split (SAKE\n"
    "zeroshot2 = ZSE-SBIR zeroshot0). The harness picks each by its unseen class list, not by folder name."
)


class _Sketchy(SBIRDataset):
    folder = "Sketchy"
    split_dirs = ("zeroshot0", "zeroshot1", "zeroshot2")
    sketch_list = "sketch_tx_000000000000_ready_filelist_{}.txt"
    photo_list = "all_photo_filelist_{}.txt"
    prepare_hint = SKETCHY_HINT


@register_dataset("sketchy_25")
class Sketchy25(_Sketchy):
    """Sketchy Extended, 100 seen / 25 random unseen classes (SAKE `zeroshot1`)."""

    name = "sketchy_25"
    unseen_classes = ("cup", "swan", "harp", "squirrel", "snail", "ray", "pineapple", "volcano", "rifle", "scissors",
                      "parrot", "windmill", "teddy_bear", "tree", "wine_bottle", "deer", "chicken", "airplane",
                      "wheelchair", "tank", "umbrella", "butterfly", "camel", "horse", "bell")
    published_counts = (15229, 17101)
    published_sizes = {"sketch_zero": 15229, "photo_zero": 17101}


@register_dataset("sketchy_21")
class Sketchy21(_Sketchy):
    """Sketchy Extended, 104 seen / 21 unseen classes absent from ImageNet-1k (Yelamarthi et al. ECCV'18)."""

    name = "sketchy_21"
    unseen_classes = ("bat", "cabin", "cow", "dolphin", "door", "giraffe", "helicopter", "mouse", "pear", "raccoon",
                      "rhinoceros", "saw", "scissors", "seagull", "skyscraper", "songbird", "sword", "tree",
                      "wheelchair", "windmill", "window")
    published_counts = (12694, 12553)
    published_sizes = {"sketch_zero": 12694, "photo_zero": 12553}


@register_dataset("tuberlin_30")
class TUBerlin30(SBIRDataset):
    """TU-Berlin Extended, 220 seen / 30 unseen classes."""

    name = "tuberlin_30"
    folder = "TUBerlin"
    split_dirs = ("zeroshot",)
    sketch_list = "png_ready_filelist_{}.txt"
    photo_list = "ImageResized_ready_filelist_{}.txt"
    unseen_classes = ("banana", "bus", "tractor", "suitcase", "streetlight", "telephone", "bottle opener", "canoe",
                      "fan", "teacup", "penguin", "laptop", "shoe", "lighter", "hot air balloon", "pizza", "brain",
                      "ant", "t-shirt", "trombone", "windmill", "snowboard", "table", "rollerblades", "parachute",
                      "space shuttle", "bridge", "frying-pan", "bread", "horse")
    published_counts = (2400, 27989)
    published_sizes = {"sketch_zero": 2400, "photo_zero": 27989, "sketch_train": 15400}
    prepare_hint = (
        f"{_SOURCES}\nLayout (protocols.md §B.1):\n"
        "  $HARNESS_DATA/TUBerlin/png_ready/<class>/<n>.png\n"
        "  $HARNESS_DATA/TUBerlin/ImageResized_ready/<class>/<wnid>_<n>.JPEG   (upper-case .JPEG)\n"
        "  $HARNESS_DATA/TUBerlin/zeroshot/{cname_cid.txt, cname_cid_zero.txt,\n"
        "      png_ready_filelist_{train,zero}.txt, ImageResized_ready_filelist_{train,zero}.txt}"
    )


@register_dataset("quickdraw_30")
class QuickDraw30(SBIRDataset):
    """QuickDraw Extended (Doodle2Search, Dey et al. CVPR'19), 80 seen / 30 unseen classes."""

    name = "quickdraw_30"
    folder = "QuickDraw"
    split_dirs = ("zeroshot",)
    sketch_list = "sketch_{}.txt"
    photo_list = "all_photo_{}.txt"
    unseen_classes = ("bat", "cow", "dolphin", "door", "giraffe", "helicopter", "mouse", "raccoon", "rhinoceros",
                      "saw", "scissors", "skyscraper", "tree", "windmill", "feather", "campfire", "palm tree",
                      "fire_hydrant", "bread", "beach", "megaphone", "cactus", "zebra", "tiger", "shark", "frog",
                      "banana", "cake", "hamburger", "fan")
    published_counts = (92291, 54151)
    published_sizes = {"sketch_zero": 92291, "photo_zero": 54151}
    prepare_hint = (
        f"{_SOURCES}\nLayout (protocols.md §B.1):\n"
        "  $HARNESS_DATA/QuickDraw/sketches/<class>/<googleid>.png\n"
        "  $HARNESS_DATA/QuickDraw/images/<class>/image_<n>.jpg\n"
        "  $HARNESS_DATA/QuickDraw/zeroshot/{cname_cid.txt, cname_cid_zero.txt,\n"
        "      sketch_{train,zero}.txt, all_photo_{train,zero}.txt}\n"
        "Use ZSE-SBIR's sketch_zero.txt / all_photo_zero.txt (not Vermouth's *_filelist_val.txt)."
    )


# -- the embedded mini dataset -----------------------------------------------------------------


@register_dataset("mini_sbir")
class MiniSBIR(_Sketchy):
    """Synthetic shapes in the Sketchy Extended layout, written by `tasks/sbir/mini.py`."""

    name = "mini_sbir"
    folder = "mini_sbir"
    embedded = True
    split_dirs = ("zeroshot1",)
    prepare_hint = (
        "Generated by the harness (no download): MiniSBIR.generate(root) (tasks/sbir/mini.py) writes the\n"
        "Sketchy Extended layout under $HARNESS_DATA/mini_sbir/ (256x256/sketch/..., 256x256/photo/...,\n"
        "EXTEND_image_sketchy_ready/..., zeroshot1/*.txt)."
    )

    unseen_classes = mini.UNSEEN
    templates = ("a photo of a {}.",)

    @classmethod
    def generate(cls, root: Path) -> None:
        mini.generate(Path(root))

    def fingerprint(self) -> str:
        """The lists' hash plus the generator version (the pixels are not hashed)."""
        return sha256_text(canonical_json({"mini_version": mini.MINI_VERSION, "files": super().fingerprint()}))
