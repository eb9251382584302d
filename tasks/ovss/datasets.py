"""Readers of the prepared OVSS formats (protocols.md C.1, CAT-Seg's `datasets/` layout), one class per set.

Images and label maps are paired by file stem, as detectron2's `load_sem_seg` does; the label folder lists
the items. Each reader knows its ignore value and its vocabulary: the class-name strings of the published
evaluations (CAT-Seg's `datasets/*.json`), where a string may hold ", "-separated synonyms whose embeddings
are averaged (prompt templates are a protocol value of the task). Labels are checked when read: a map
whose size differs from its image, or an id that is neither a class nor the ignore value, is an error that
names the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from harness.api import Dataset
from harness.catalog import register_dataset
from harness.io import canonical_json, sha256_file, sha256_text

VOCAB_DIR = Path(__file__).parent / "vocab"
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
_CATSEG = "CAT-Seg datasets/README.md (https://github.com/cvlab-kaist/CAT-Seg/blob/main/datasets/README.md)"


@dataclass(frozen=True)
class SegItem:
    """One image and its label map, paired by stem."""

    stem: str
    image: Path
    label: Path


class SegmentationDataset(Dataset):
    """What every OVSS reader shares: stem pairing, label decoding and checks, vocabulary, fingerprint."""

    task_family: ClassVar[str] = "ovss"
    image_dir: ClassVar[str]
    label_dir: ClassVar[str]
    label_ext: ClassVar[str] = ".png"
    ignore_index: ClassVar[int] = 255
    # Bundled vocabulary under tasks/ovss/vocab/, or (vocab_in_root) a file the user copies into the dataset folder.
    vocab_file: ClassVar[str]
    vocab_in_root: ClassVar[bool] = False
    n_classes: ClassVar[int | None] = None  # the vocabulary's expected length, checked when read
    shift_labels: ClassVar[bool] = False  # raw ADE-150 maps: 0 = "other", 1..150 → uint8 (x - 1), 0 wraps to 255
    drop_all_ignore: ClassVar[bool] = False  # VOC-20: images whose label is entirely ignore are not scored
    # Images of the set (harness.plan.cost, before the data is there); one split per reader, named by its role.

    def __init__(self, root: Path):
        super().__init__(root)
        self._items: list[SegItem] | None = None
        self._classnames: list[str] | None = None


    def _require_dir(self, path: Path, what: str) -> None:
        if not path.is_dir():
            raise self._missing(path, what)

    # -- vocabulary ------------------------------------------------------------------------------
    @property
    def vocab_path(self) -> Path:
        return (self.root if self.vocab_in_root else VOCAB_DIR) / self.vocab_file

    def classnames(self) -> list[str]:
        """The class strings indexed by label id, exactly as published (synonyms still joined by ", ")."""
        if self._classnames is None:
            path = self.vocab_path
            if not path.is_file():
                raise self._missing(path, "the class-name file")
            try:
                names = json.loads(path.read_text())
            except (ValueError, UnicodeDecodeError) as exc:
                raise self._malformed(path, f"not valid JSON ({exc})") from None
            except RecursionError:  # a hostile or broken file nested thousands deep
                raise self._malformed(path, "not valid JSON (nested too deeply)") from None
            if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
                raise self._malformed(path, "expected a non-empty JSON list of class-name strings")
            if self.n_classes is not None and len(names) != self.n_classes:
                raise self._malformed(path, f"expected {self.n_classes} class names, found {len(names)}")
            self._classnames = names
        return list(self._classnames)

    def synonyms(self) -> list[list[str]]:
        """Per class, its synonym list (CAT-Seg splits the published strings on ", ")."""
        return [name.split(", ") for name in self.classnames()]

    # -- items -----------------------------------------------------------------------------------
    @property
    def image_root(self) -> Path:
        return self.root / self.image_dir

    @property
    def label_root(self) -> Path:
        return self.root / self.label_dir

    def items(self) -> list[SegItem]:
        """Every label map of the split (sorted by stem) with the image of the same stem."""
        if self._items is None:
            if not self.root.is_dir():
                raise self._missing(self.root, f"the dataset folder (expected $HARNESS_DATA/{self.folder})")
            self._require_dir(self.label_root, "the label folder")
            self._require_dir(self.image_root, "the image folder")
            images = {}
            with os.scandir(self.image_root) as it:
                for entry in it:
                    stem, ext = os.path.splitext(entry.name)
                    if ext.lower() in IMAGE_EXTS:
                        images.setdefault(stem, self.image_root / entry.name)
            items = []
            with os.scandir(self.label_root) as it:
                names = sorted(e.name for e in it if e.name.endswith(self.label_ext))
            for name in names:
                stem = name[: -len(self.label_ext)]
                if stem not in images:
                    raise self._missing(self.image_root / f"{stem}.jpg", f"the image of label {self.label_root / name}")
                items.append(SegItem(stem, images[stem], self.label_root / name))
            if not items:
                raise self._missing(self.label_root / f"*{self.label_ext}", "every label map")
            self._items = items
        return list(self._items)

    def load_image(self, item: SegItem) -> Image.Image:
        from harness.data.images import open_rgb

        return open_rgb(item.image, self.name)

    def load_label(self, item: SegItem, image_size: tuple[int, int] | None = None) -> np.ndarray:
        """The label map as int64 [H, W], ids 0..n-1 or `ignore_index`; checked against the image size."""
        try:
            with Image.open(item.label) as im:
                arr = np.array(im)
        except OSError as exc:
            raise self._malformed(item.label, f"cannot decode the label map ({exc})") from None
        if arr.ndim != 2:
            raise self._malformed(item.label, f"expected a single-channel label map, got shape {arr.shape}")
        if image_size is not None and (arr.shape[1], arr.shape[0]) != tuple(image_size):
            raise self._malformed(item.label, f"label map is {arr.shape[1]}x{arr.shape[0]} (WxH) but its image "
                                              f"{item.image.name} is {image_size[0]}x{image_size[1]}")
        labels = arr.astype(np.int64)
        n = len(self.classnames())
        if self.shift_labels:  # raw 0 = "other" → ignore; raw 1..n → 0..n-1
            raw_bad = labels > n
            if raw_bad.any():
                raise self._malformed(item.label, f"raw ids {sorted(set(labels[raw_bad].tolist()))[:10]} are "
                                                  f"outside 0 (other) ..{n}")
            labels = np.where(labels == 0, self.ignore_index, labels - 1)
        bad = (labels >= n) & (labels != self.ignore_index) | (labels < 0)
        if bad.any():
            raise self._malformed(item.label, f"ids {sorted(set(labels[bad].tolist()))[:10]} are outside 0..{n - 1} "
                                              f"and not the ignore value {self.ignore_index}")
        return labels

    def load(self, item: SegItem) -> tuple[Image.Image, np.ndarray]:
        image = self.load_image(item)
        return image, self.load_label(item, image.size)

    def is_scored(self, labels: np.ndarray) -> bool:
        """VOC-20 drops images whose label is entirely ignore (they add nothing to the matrix either way)."""
        return not (self.drop_all_ignore and bool((labels == self.ignore_index).all()))

    # -- the Dataset interface -------------------------------------------------------------------
    def verify(self) -> None:
        """Vocabulary, then every pair: both files present and the label's size equal to its image's."""
        self._items = self._classnames = None
        self.classnames()
        for item in self.items():
            try:
                with Image.open(item.image) as im:
                    size = im.size
            except OSError as exc:
                raise self._malformed(item.image, f"cannot open the image ({exc})") from None
            try:
                with Image.open(item.label) as lab:
                    lsize = lab.size
            except OSError as exc:
                raise self._malformed(item.label, f"cannot open the label map ({exc})") from None
            if lsize != size:
                raise self._malformed(item.label, f"label map is {lsize[0]}x{lsize[1]} (WxH) but its image "
                                                  f"{item.image.name} is {size[0]}x{size[1]}")

    def fingerprint(self) -> str:
        """sha256 of the vocabulary bytes and the sorted list of label files (no pixel is read)."""
        stems = [it.label.name for it in self.items()]
        return sha256_text(canonical_json({"vocab": sha256_file(self.vocab_path), "labels": stems,
                                           "ignore": self.ignore_index, "shift": self.shift_labels}))


# -- the real prepared sets ----------------------------------------------------------------------

@register_dataset("coco_stuff_171")
class CocoStuff171(SegmentationDataset):
    """COCO-Stuff-171 train2017: labels 0..170 (prepare_coco_stuff.py), 255 ignore."""

    name = "coco_stuff_171"
    published_sizes = {"train": 118_287}  # COCO 2017 train images (not in protocols.md)
    folder = "coco-stuff"
    image_dir = "images/train2017"
    label_dir = "annotations_detectron2/train2017"
    vocab_file = "coco_stuff171.json"
    n_classes = 171
    prepare_hint = (
        f"Per {_CATSEG}:\n"
        "put the COCO 2017 train images in $HARNESS_DATA/coco-stuff/images/train2017/ and the COCO-Stuff\n"
        "stuffthingmaps_trainval2017 PNGs in coco-stuff/annotations/train2017/, then run CAT-Seg's\n"
        "datasets/prepare_coco_stuff.py to write coco-stuff/annotations_detectron2/train2017/*.png (ids 0..170)."
    )


@register_dataset("ade150")
class ADE150(SegmentationDataset):
    """ADEChallengeData2016 validation: raw maps (0 = other, 1..150) shifted on read to 0..149, 255 ignore."""

    name = "ade150"
    published_sizes = {"val": 2_000}  # protocols.md C.1
    folder = "ADEChallengeData2016"
    image_dir = "images/validation"
    label_dir = "annotations/validation"
    vocab_file = "ade150.json"
    n_classes = 150
    shift_labels = True
    prepare_hint = (
        f"Per {_CATSEG}:\n"
        "extract http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip under $HARNESS_DATA\n"
        "(-> ADEChallengeData2016/{images,annotations}/validation/ADE_val_*.{jpg,png}). The harness shifts the\n"
        "labels itself (as prepare_ade20k_150.py does), so annotations_detectron2/ is not needed."
    )


@register_dataset("ade847")
class ADE847(SegmentationDataset):
    """ADE20K-full validation as prepare_ade20k_847.py writes it: uint16 TIFF trainIds 0..846, 65535 ignore."""

    name = "ade847"
    published_sizes = {"val": 2_000}  # the ADE20K validation images, prepared
    folder = "ADE20K_2021_17_01"
    image_dir = "images_detectron2/validation"
    label_dir = "annotations_detectron2/validation"
    label_ext = ".tif"
    ignore_index = 65535
    vocab_file = "ade847.json"
    vocab_in_root = True
    n_classes = 847
    prepare_hint = (
        f"Per {_CATSEG}:\n"
        "extract the ADE20K 2021_17_01 release under $HARNESS_DATA (-> ADE20K_2021_17_01/{images/ADE/validation,\n"
        "index_ade20k.pkl}), run CAT-Seg's datasets/prepare_ade20k_847.py (writes images_detectron2/validation/*.jpg\n"
        "and annotations_detectron2/validation/*.tif), and copy CAT-Seg's datasets/ade847.json (the 847 class\n"
        "strings) to ADE20K_2021_17_01/ade847.json."
    )


class _PascalContext(SegmentationDataset):
    folder = "VOCdevkit/VOC2010"
    image_dir = "JPEGImages"
    prepare_hint = (
        f"Per {_CATSEG}:\n"
        "extract VOCtrainval_03-May-2010.tar under $HARNESS_DATA (-> VOCdevkit/VOC2010/JPEGImages/), add\n"
        "trainval_merged.json and trainval/ (the 459-class .mat files) there, run CAT-Seg's\n"
        "datasets/prepare_pascal_context_59.py and prepare_pascal_context_459.py (-> annotations_detectron2/\n"
        "{pc59_val/*.png, pc459_val/*.tif}); for PC-459 also copy CAT-Seg's datasets/pc459.json to\n"
        "VOCdevkit/VOC2010/pc459.json."
    )


@register_dataset("pc59")
class PascalContext59(_PascalContext):
    """PASCAL-Context-59 val: background and non-59 pixels are 255 (ignored); no background class."""

    name = "pc59"
    published_sizes = {"val": 5_104}  # CAT-Seg's pascalcontext_val.txt (protocols.md C.1)
    label_dir = "annotations_detectron2/pc59_val"
    vocab_file = "pc59.json"
    n_classes = 59


@register_dataset("pc459")
class PascalContext459(_PascalContext):
    """PASCAL-Context-459 val: TIFF LabelMap − 1 (0..458); ignore 459 as CAT-Seg registers it (SAN: 65535)."""

    name = "pc459"
    published_sizes = {"val": 5_104}  # the same val images as PC-59
    label_dir = "annotations_detectron2/pc459_val"
    label_ext = ".tif"
    ignore_index = 459
    vocab_file = "pc459.json"
    vocab_in_root = True
    n_classes = 459


@register_dataset("voc20")
class PascalVOC20(SegmentationDataset):
    """VOC2012 val without background: 0 → 255, 1..20 → 0..19; all-ignore images are not scored."""

    name = "voc20"
    published_sizes = {"val": 1_449}  # ImageSets/Segmentation/val.txt (protocols.md C.1)
    folder = "VOCdevkit/VOC2012"
    image_dir = "JPEGImages"
    label_dir = "annotations_detectron2/val"
    vocab_file = "voc20.json"
    n_classes = 20
    drop_all_ignore = True
    prepare_hint = (
        f"Per {_CATSEG}:\n"
        "extract VOCtrainval_11-May-2012.tar under $HARNESS_DATA (-> VOCdevkit/VOC2012/), add SegmentationClassAug/\n"
        "there, and run CAT-Seg's datasets/prepare_voc.py (-> VOCdevkit/VOC2012/annotations_detectron2/val/*.png,\n"
        "background as 255; images whose label is all ignore are not written)."
    )


# -- the embedded mini sets ----------------------------------------------------------------------


class _Mini(SegmentationDataset):
    """Generated by `tasks/ovss/mini.py`; the vocabulary lives beside the data, as for ADE-847."""

    embedded = True
    vocab_file = "classnames.json"
    vocab_in_root = True

    @classmethod
    def generate(cls, root: Path) -> None:
        from tasks.ovss import mini

        mini.generate(cls.name, Path(root))

    def fingerprint(self) -> str:
        from tasks.ovss.mini import MINI_VERSION

        return sha256_text(canonical_json({"mini_version": MINI_VERSION, "files": super().fingerprint()}))


@register_dataset("mini_ovss_train")
class MiniCocoStuff(_Mini):
    """A small training set in the COCO-Stuff layout (ids 0..K-1, 255 ignore)."""

    name = "mini_ovss_train"
    folder = "mini_ovss_train"
    image_dir = CocoStuff171.image_dir
    label_dir = CocoStuff171.label_dir
    prepare_hint = "Generated by the harness (no download): tasks/ovss/mini.py, COCO-Stuff layout."


@register_dataset("mini_ovss")
class MiniADE(_Mini):
    """A small test set in the ADEChallengeData2016 layout (raw 0 = other, shifted on read to 255)."""

    name = "mini_ovss"
    folder = "mini_ovss"
    image_dir = ADE150.image_dir
    label_dir = ADE150.label_dir
    shift_labels = True
    prepare_hint = "Generated by the harness (no download): tasks/ovss/mini.py, ADEChallengeData2016 layout."
