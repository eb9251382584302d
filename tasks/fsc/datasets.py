"""Readers of the real CoOp few-shot on-disk formats (protocols.md §A.1), one small class per dataset.

The split files are the published ones (`split_zhou_*.json`, ImageNet's folders, FGVC's official txt files):
the harness never regenerates a split, so every backbone is scored on exactly the images CoOp used. The
embedded `mini_coop` dataset is written by `tasks/fsc/mini.py` in the same format and read by the same code.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import ClassVar

from harness.api import ClassificationDataset, ImageItem
from harness.catalog import register_dataset
from harness.io import canonical_json, sha256_file, sha256_text

SPLITS = ("train", "val", "test")
_COOP = "CoOp DATASETS.md (https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md)"
TEMPLATES_FILE = Path(__file__).with_name("templates.json")


@functools.cache
def _method_templates() -> dict[str, tuple[str, ...]]:
    """Vermouth's per-dataset prompt lists (the file's "_source" names where they come from)."""
    data = json.loads(TEMPLATES_FILE.read_text())
    return {k: tuple(v) for k, v in data.items() if not k.startswith("_")}


class FewShotDataset(ClassificationDataset):
    """What every CoOp reader shares: root checks, parsed splits cached per instance, cheap fingerprint."""

    task_family: ClassVar[str] = "fsc"
    image_dir: ClassVar[str]  # relative to the root; split paths are relative to it
    split_file: ClassVar[str] = ""  # the file that defines the splits (the first one when there are several)
    class_file: ClassVar[str] = ""  # a separate class-name file, when the format has one
    # Text-classifier prompts (FSCProtocol.templates): CoOp's one CUSTOM_TEMPLATES prompt per dataset ("coop"),
    # or the method's set (Vermouth's templates.json, copied to tasks/fsc/templates.json) under `method_key`.
    coop_templates: ClassVar[tuple[str, ...]] = ("a photo of a {}.",)
    method_key: ClassVar[str | None] = None  # the key in templates.json; None: the dataset's name
    # Published split sizes and class count (protocols.md §A.1, CoOp Table 1): the cost of a plan whose data is
    # not prepared yet (harness.plan.cost). No "val" entry: no val split, the few-shot val is drawn from train
    # (ImageNet).
    n_classes: ClassVar[int | None] = None

    def __init__(self, root: Path):
        super().__init__(root)
        self._splits: dict[str, list[ImageItem]] | None = None
        self._classnames: list[str] | None = None

    @classmethod
    def method_templates(cls) -> tuple[str, ...]:
        """The method's prompt set for this dataset (tasks/fsc/templates.json), in the method's order."""
        return _method_templates()[cls.method_key or cls.name]

    # -- the interface ---------------------------------------------------------------------------
    @property
    def image_root(self) -> Path:
        return self.root / self.image_dir

    def image_path(self, item: ImageItem) -> Path:
        return self.image_root / item.path

    def defining_files(self) -> list[Path]:
        """The files whose bytes define the splits and class names (hashed by `fingerprint`)."""
        names = [self.split_file, self.class_file]
        return [self.root / n for n in names if n]

    def fingerprint(self) -> str:
        """sha256 over the defining files' bytes; cheap (no image is read)."""
        self._require_root()
        digests = {}
        for path in self.defining_files():
            self._require_file(path, "a split or class-name file")
            digests[path.relative_to(self.root).as_posix()] = sha256_file(path)
        return sha256_text(canonical_json(digests))

    def splits(self) -> dict[str, list[ImageItem]]:
        """Parsed and validated once per instance (image files are not stat-ed; `verify` does that)."""
        if self._splits is None:
            self._require_root()
            self._splits, self._classnames = self._read()
        return {k: list(v) for k, v in self._splits.items()}

    def classnames(self) -> list[str]:
        self.splits()
        assert self._classnames is not None
        return list(self._classnames)

    def verify(self) -> None:
        """Re-read the split files from disk, then check that every listed image exists."""
        self._splits = self._classnames = None
        splits = self.splits()  # root, then split and class-name files
        if not self.image_root.is_dir():
            raise self._missing(self.image_root, "the image folder")
        for split, items in splits.items():
            for i, item in enumerate(items):
                path = self.image_path(item)
                if not path.is_file():
                    raise self._missing(path, f"image {split}[{i}] listed by {self.split_file or 'the tree'}")

    def _read(self) -> tuple[dict[str, list[ImageItem]], list[str]]:
        raise NotImplementedError


class SplitJsonDataset(FewShotDataset):
    """CoOp's `split_zhou_<Name>.json`: {"train"|"val"|"test": [[relative_impath, int_label, classname]]}."""

    def _read(self) -> tuple[dict[str, list[ImageItem]], list[str]]:
        path = self.root / self.split_file
        self._require_file(path, "the split file")
        try:
            data = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError) as exc:
            raise self._malformed(path, f"not valid JSON ({exc})") from None
        except RecursionError:  # a hostile or broken file nested thousands deep
            raise self._malformed(path, "not valid JSON (nested too deeply)") from None
        if not isinstance(data, dict) or any(not isinstance(data.get(s), list) for s in SPLITS):
            raise self._malformed(path, "expected an object whose keys train, val and test hold lists")
        label_name: dict[int, str] = {}
        name_label: dict[str, int] = {}
        splits: dict[str, list[ImageItem]] = {}
        for split in SPLITS:
            items = []
            for i, entry in enumerate(data[split]):
                if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str) and entry[0]
                        and type(entry[1]) is int and entry[1] >= 0 and isinstance(entry[2], str)):
                    raise self._malformed(path, f"{split}[{i}] = {entry!r}: expected "
                                                "[relative_impath, int_label >= 0, classname]")
                impath, label, cname = entry
                if impath.startswith("/") or ".." in Path(impath).parts:
                    raise self._malformed(path, f"{split}[{i}]: path {impath!r} is not relative to "
                                                f"{self.image_dir or 'the dataset folder'}")
                known_name = label_name.setdefault(label, cname)
                known_label = name_label.setdefault(cname, label)
                if known_name != cname or known_label != label:
                    raise self._malformed(path, f"{split}[{i}]: label {label} / class '{cname}' disagree "
                                                f"with an earlier entry (label {label} = '{known_name}', "
                                                f"'{cname}' = label {known_label})")
                items.append(ImageItem(path=impath, label=label, classname=cname))
            splits[split] = items
        # Dassl's class names: the sorted (label, classname) pairs seen in train.
        pairs = sorted({(it.label, it.classname) for it in splits["train"]})
        labels = [lab for lab, _ in pairs]
        if labels != list(range(len(pairs))):
            raise self._malformed(path, f"train labels are not contiguous 0..n-1: {labels[:20]}")
        extra = sorted(lab for lab in label_name if lab >= len(pairs))
        if extra:
            raise self._malformed(path, f"labels {extra[:10]} appear in val/test but not in train")
        return splits, [c for _, c in pairs]


# -- the eleven CoOp datasets ------------------------------------------------------------------


@register_dataset("imagenet")
class ImageNet(FewShotDataset):
    """No split json: train = every file of `images/train/<wnid>/`, test = `images/val/<wnid>/`, no val split.

    CoOp (Dassl) reuses the test images as val; here the few-shot val is drawn from train instead, disjoint from
    the K-shot support (`tasks.fsc.sampling`), so the probe's C is never chosen on test images. The fingerprint
    names that rule, so results and few-shot files of the test-as-val era never mix with these.
    """

    name = "imagenet"
    folder = "imagenet"
    # train: ILSVRC-2012's 1,281,167 images (protocols.md rounds to 1.28M); no val split (ILSVRC val is the test)
    published_sizes = {"train": 1_281_167, "test": 50_000}
    n_classes = 1000
    image_dir = "images"
    class_file = "classnames.txt"
    prepare_hint = (
        f"Per {_COOP}:\n"
        "create $HARNESS_DATA/imagenet/images/; extract the ILSVRC-2012 train set to\n"
        "images/train/<wnid>/*.JPEG (1,000 folders like n01440764) and the validation set, sorted into\n"
        "per-class folders, to images/val/<wnid>/*.JPEG (symbolic links to an existing copy are fine);\n"
        "download classnames.txt (lines 'n01440764 tench', from CLIP's prompt notebook) from the Google\n"
        "Drive link in DATASETS.md to $HARNESS_DATA/imagenet/classnames.txt. No split json is used."
    )
    coop_templates = ("a photo of a {}.",)

    def _read(self) -> tuple[dict[str, list[ImageItem]], list[str]]:
        cls_path = self.root / self.class_file
        self._require_file(cls_path, "the class-name file")
        wnid_name: dict[str, str] = {}
        for lineno, line in enumerate(cls_path.read_text().splitlines(), 1):
            wnid, _, cname = line.strip().partition(" ")
            if not wnid:
                continue
            if not cname.strip() or wnid in wnid_name:
                raise self._malformed(cls_path, f"line {lineno}: expected a new '<wnid> <class name>', "
                                                f"got {line!r}")
            wnid_name[wnid] = cname.strip()
        wnids = sorted(wnid_name)  # label = index of the sorted wnid folder
        items: dict[str, list[ImageItem]] = {}
        for split in ("train", "val"):
            split_dir = self.image_root / split
            if not split_dir.is_dir():
                raise self._missing(split_dir, f"the {split} image folder")
            folders = {e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith(".")}
            unknown = sorted(folders - wnid_name.keys())
            if unknown:
                raise self._malformed(cls_path, f"folder {split_dir / unknown[0]} has no line here")
            items[split] = []
            for label, wnid in enumerate(wnids):
                if wnid not in folders:
                    raise self._missing(split_dir / wnid, f"the {split} folder of class '{wnid_name[wnid]}'")
                files = sorted(e.name for e in os.scandir(split_dir / wnid)
                               if e.is_file() and not e.name.startswith("."))
                if not files:
                    raise self._missing(split_dir / wnid / "*", f"every {split} image of '{wnid_name[wnid]}'")
                items[split] += [ImageItem(path=f"{split}/{wnid}/{f}", label=label, classname=wnid_name[wnid])
                                 for f in files]
        return {"train": items["train"], "val": [], "test": items["val"]}, [wnid_name[w] for w in wnids]

    def fingerprint(self) -> str:
        """The class-name file's hash plus where the few-shot val comes from (see the class docstring)."""
        return sha256_text(canonical_json({"fewshot_val": "train-minus-support", "files": super().fingerprint()}))


@register_dataset("caltech101")
class Caltech101(SplitJsonDataset):
    name = "caltech101"
    folder = "caltech-101"
    published_sizes = {"train": 4_128, "val": 1_649, "test": 2_465}
    n_classes = 100
    image_dir = "101_ObjectCategories"
    split_file = "split_zhou_Caltech101.json"
    prepare_hint = (
        f"Per {_COOP}:\n"
        "create $HARNESS_DATA/caltech-101/; download\n"
        "http://www.vision.caltech.edu/Image_Datasets/Caltech101/101_ObjectCategories.tar.gz and extract\n"
        "it there (-> caltech-101/101_ObjectCategories/<class>/*.jpg); download split_zhou_Caltech101.json\n"
        "from the Google Drive link in DATASETS.md to $HARNESS_DATA/caltech-101/split_zhou_Caltech101.json."
    )
    coop_templates = ("a photo of a {}.",)


@register_dataset("oxford_pets")
class OxfordPets(SplitJsonDataset):
    name = "oxford_pets"
    folder = "oxford_pets"
    published_sizes = {"train": 2_944, "val": 736, "test": 3_669}
    n_classes = 37
    image_dir = "images"
    split_file = "split_zhou_OxfordPets.json"
    prepare_hint = (
        f"Per {_COOP}:\n"
        "create $HARNESS_DATA/oxford_pets/; extract there\n"
        "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz (-> oxford_pets/images/*.jpg) and\n"
        "https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz (-> oxford_pets/annotations/);\n"
        "download split_zhou_OxfordPets.json from the Google Drive link in DATASETS.md to\n"
        "$HARNESS_DATA/oxford_pets/split_zhou_OxfordPets.json."
    )
    coop_templates = ("a photo of a {}, a type of pet.",)


@register_dataset("stanford_cars")
class StanfordCars(SplitJsonDataset):
    name = "stanford_cars"
    folder = "stanford_cars"
    published_sizes = {"train": 6_509, "val": 1_635, "test": 8_041}
    n_classes = 196
    image_dir = ""  # split paths start with cars_train/ or cars_test/
    split_file = "split_zhou_StanfordCars.json"
    prepare_hint = (
        f"Per {_COOP}:\n"
        "create $HARNESS_DATA/stanford_cars/; extract there cars_train.tgz and cars_test.tgz\n"
        "(http://ai.stanford.edu/~jkrause/car196/) and car_devkit.tgz (-> devkit/); add\n"
        "cars_test_annos_withlabels.mat; download split_zhou_StanfordCars.json from the Google Drive link\n"
        "in DATASETS.md to $HARNESS_DATA/stanford_cars/split_zhou_StanfordCars.json.\n"
        "Layout: stanford_cars/{cars_train/, cars_test/, devkit/, split_zhou_StanfordCars.json}."
    )
    coop_templates = ("a photo of a {}.",)


@register_dataset("oxford_flowers")
class OxfordFlowers(SplitJsonDataset):
    name = "oxford_flowers"
    folder = "oxford_flowers"
    published_sizes = {"train": 4_093, "val": 1_633, "test": 2_463}
    n_classes = 102
    image_dir = "jpg"
    split_file = "split_zhou_OxfordFlowers.json"
    prepare_hint = (
        f"Per {_COOP}:\n"
        "create $HARNESS_DATA/oxford_flowers/; extract there\n"
        "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz (-> oxford_flowers/jpg/*.jpg);\n"
        "add imagelabels.mat (same site), cat_to_name.json and split_zhou_OxfordFlowers.json (Google\n"
        "Drive links in DATASETS.md) to $HARNESS_DATA/oxford_flowers/."
    )
    coop_templates = ("a photo of a {}, a type of flower.",)


@register_dataset("food101")
class Food101(SplitJsonDataset):
    name = "food101"
    folder = "food-101"
    published_sizes = {"train": 50_500, "val": 20_200, "test": 30_300}
    n_classes = 101
    image_dir = "images"
    split_file = "split_zhou_Food101.json"
    prepare_hint = (
        f"Per {_COOP}:\n"
        "extract food-101.tar.gz (https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/) under\n"
        "$HARNESS_DATA, giving $HARNESS_DATA/food-101/{images/<class>/*.jpg, meta/}; download\n"
        "split_zhou_Food101.json from the Google Drive link in DATASETS.md to\n"
        "$HARNESS_DATA/food-101/split_zhou_Food101.json."
    )
    coop_templates = ("a photo of {}, a type of food.",)


@register_dataset("fgvc_aircraft")
class FGVCAircraft(FewShotDataset):
    """Official split: `images_variant_<split>.txt` lines `<imageid> <variant>`; label = variants.txt line."""

    name = "fgvc_aircraft"
    folder = "fgvc_aircraft"
    published_sizes = {"train": 3_334, "val": 3_333, "test": 3_333}
    n_classes = 100
    image_dir = "images"
    split_file = "images_variant_train.txt"
    class_file = "variants.txt"
    split_files: ClassVar[dict[str, str]] = {s: f"images_variant_{s}.txt" for s in SPLITS}
    prepare_hint = (
        f"Per {_COOP}:\n"
        "download https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz,\n"
        "extract it, keep only its data/ folder and move it to $HARNESS_DATA/fgvc_aircraft/\n"
        "(-> fgvc_aircraft/{images/<id>.jpg, variants.txt, images_variant_train.txt,\n"
        "images_variant_val.txt, images_variant_test.txt, ...}). No split json is used."
    )
    coop_templates = ("a photo of a {}, a type of aircraft.",)

    def defining_files(self) -> list[Path]:
        return [self.root / self.class_file] + [self.root / f for f in self.split_files.values()]

    def _read(self) -> tuple[dict[str, list[ImageItem]], list[str]]:
        var_path = self.root / self.class_file
        self._require_file(var_path, "the class-name file")
        classnames = [ln.strip() for ln in var_path.read_text().splitlines() if ln.strip()]
        if len(set(classnames)) != len(classnames):
            raise self._malformed(var_path, "a variant is listed twice")
        label_of = {c: i for i, c in enumerate(classnames)}
        splits: dict[str, list[ImageItem]] = {}
        for split, fname in self.split_files.items():
            path = self.root / fname
            self._require_file(path, f"the {split} split file")
            items = []
            for lineno, line in enumerate(path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                imageid, _, variant = line.strip().partition(" ")
                if variant not in label_of:
                    raise self._malformed(path, f"line {lineno}: {line!r}: expected '<imageid> <variant>' "
                                                f"with a variant listed in {var_path}")
                items.append(ImageItem(path=f"{imageid}.jpg", label=label_of[variant], classname=variant))
            splits[split] = items
        return splits, classnames


@register_dataset("sun397")
class SUN397(SplitJsonDataset):
    name = "sun397"
    folder = "sun397"
    published_sizes = {"train": 15_880, "val": 3_970, "test": 19_850}
    n_classes = 397
    image_dir = "SUN397"
    split_file = "split_zhou_SUN397.json"
    prepare_hint = (
        f"Per {_COOP}:\n"
        "create $HARNESS_DATA/sun397/; extract there\n"
        "http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz (-> sun397/SUN397/) and\n"
        "https://vision.princeton.edu/projects/2010/SUN/download/Partitions.zip; download\n"
        "split_zhou_SUN397.json from the Google Drive link in DATASETS.md to\n"
        "$HARNESS_DATA/sun397/split_zhou_SUN397.json."
    )
    coop_templates = ("a photo of a {}.",)


@register_dataset("dtd")
class DTD(SplitJsonDataset):
    name = "dtd"
    folder = "dtd"
    published_sizes = {"train": 2_820, "val": 1_128, "test": 1_692}
    n_classes = 47
    image_dir = "images"
    split_file = "split_zhou_DescribableTextures.json"
    prepare_hint = (
        f"Per {_COOP}:\n"
        "extract https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz under $HARNESS_DATA\n"
        "(-> $HARNESS_DATA/dtd/{images/<category>/*.jpg, imdb/, labels/}); download\n"
        "split_zhou_DescribableTextures.json from the Google Drive link in DATASETS.md to\n"
        "$HARNESS_DATA/dtd/split_zhou_DescribableTextures.json."
    )
    coop_templates = ("{} texture.",)


@register_dataset("eurosat")
class EuroSAT(SplitJsonDataset):
    name = "eurosat"
    folder = "eurosat"
    published_sizes = {"train": 13_500, "val": 5_400, "test": 8_100}
    n_classes = 10
    image_dir = "2750"
    split_file = "split_zhou_EuroSAT.json"
    prepare_hint = (
        f"Per {_COOP}:\n"
        "create $HARNESS_DATA/eurosat/; extract http://madm.dfki.de/files/sentinel/EuroSAT.zip there\n"
        "(-> eurosat/2750/<Class>/*.jpg); download split_zhou_EuroSAT.json from the Google Drive link in\n"
        "DATASETS.md to $HARNESS_DATA/eurosat/split_zhou_EuroSAT.json."
    )
    coop_templates = ("a centered satellite photo of {}.",)


@register_dataset("ucf101")
class UCF101(SplitJsonDataset):
    name = "ucf101"
    folder = "ucf101"
    published_sizes = {"train": 7_639, "val": 1_898, "test": 3_783}
    n_classes = 101
    image_dir = "UCF-101-midframes"
    split_file = "split_zhou_UCF101.json"
    prepare_hint = (
        f"Per {_COOP}:\n"
        "create $HARNESS_DATA/ucf101/; download UCF-101-midframes.zip (middle video frames) from the\n"
        "Google Drive link in DATASETS.md, extract it there (-> ucf101/UCF-101-midframes/<Action>/*.jpg);\n"
        "download split_zhou_UCF101.json (DATASETS.md) to $HARNESS_DATA/ucf101/split_zhou_UCF101.json."
    )
    coop_templates = ("a photo of a person doing {}.",)


# -- the embedded mini dataset -----------------------------------------------------------------


@register_dataset("mini_coop")
class MiniCoOp(SplitJsonDataset):
    """A 12-class synthetic dataset in the DTD-like CoOp layout, written by `tasks/fsc/mini.py`."""

    name = "mini_coop"
    folder = "mini_coop"
    embedded = True
    image_dir = "images"
    split_file = "split_zhou_MiniCoOp.json"
    prepare_hint = (
        "Generated by the harness (no download): MiniCoOp.generate(root) (tasks/fsc/mini.py) writes\n"
        "$HARNESS_DATA/mini_coop/{images/<classname>/<classname>_<n>.png, split_zhou_MiniCoOp.json}."
    )
    coop_templates = ("a photo of a {}.",)
    method_key = "imagenet"  # no method set of its own: the method's generic (ImageNet) set of 81

    @classmethod
    def generate(cls, root: Path) -> None:
        from tasks.fsc import mini

        mini.generate(Path(root))

    def fingerprint(self) -> str:
        """The split file's hash plus the generator version (the pixels are not hashed)."""
        from tasks.fsc.mini import MINI_VERSION

        return sha256_text(canonical_json({"mini_version": MINI_VERSION, "files": super().fingerprint()}))
