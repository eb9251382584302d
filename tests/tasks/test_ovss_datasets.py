"""The OVSS readers on hand-made trees in each prepared layout, broken trees, and the mini generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.catalog import DATASETS
from harness.errors import DataMissingError
from tasks.ovss import mini
from tasks.ovss.datasets import (
    ADE150,
    ADE847,
    CocoStuff171,
    MiniADE,
    MiniCocoStuff,
    PascalContext59,
    PascalContext459,
    PascalVOC20,
    SegmentationDataset,
)

NAMES = {"mini_ovss_train": MiniCocoStuff, "mini_ovss": MiniADE, "coco_stuff_171": CocoStuff171, "ade150": ADE150,
         "ade847": ADE847, "pc59": PascalContext59, "pc459": PascalContext459, "voc20": PascalVOC20}


def _pair(root: Path, cls: type[SegmentationDataset], stem: str, labels: np.ndarray,
          image_size: tuple[int, int] | None = None) -> None:
    """An image (W×H from the labels unless given) and its label map in the reader's format."""
    h, w = labels.shape
    (root / cls.image_dir).mkdir(parents=True, exist_ok=True)
    (root / cls.label_dir).mkdir(parents=True, exist_ok=True)
    Image.new("RGB", image_size or (w, h), (90, 120, 30)).save(root / cls.image_dir / f"{stem}.jpg")
    if cls.label_ext == ".tif":
        Image.fromarray(labels.astype(np.uint16)).save(root / cls.label_dir / f"{stem}.tif")
    else:
        Image.fromarray(labels.astype(np.uint8), "L").save(root / cls.label_dir / f"{stem}.png")


def _vocab(root: Path, n: int, name: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(json.dumps([f"thing{i}, synonym{i}" for i in range(n)]))


def test_catalog_names_resolve_to_the_readers():
    for name, cls in NAMES.items():
        assert DATASETS.get(name) is cls and cls.name == name and cls.task_family == "ovss"


def test_bundled_vocabularies():
    assert len(ADE150(Path("/nowhere")).classnames()) == 150
    assert ADE150(Path("/nowhere")).classnames()[7] == "bed "  # CAT-Seg's quirk, kept as published
    assert PascalContext59(Path("/nowhere")).classnames()[:2] == ["aeroplane", "bag"]
    assert len(PascalVOC20(Path("/nowhere")).classnames()) == 20
    coco = CocoStuff171(Path("/nowhere")).classnames()
    assert len(coco) == 171 and coco[0] == "person" and coco[-1] == "wood"


def test_ade150_shifts_raw_labels(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    _pair(root, ADE150, "ADE_val_00000001", np.array([[0, 1, 150], [2, 0, 3]]))
    ds = ADE150(root)
    ds.verify()
    _, labels = ds.load(ds.items()[0])
    assert labels.tolist() == [[255, 0, 149], [1, 255, 2]]


def test_ade847_tiff_with_65535_ignore_and_vocab_from_the_folder(tmp_path):
    root = tmp_path / "ADE20K_2021_17_01"
    _pair(root, ADE847, "ADE_val_00000001", np.array([[0, 846, 65535], [1000 - 154, 3, 65535]]))
    with pytest.raises(DataMissingError, match="ade847.json"):
        ADE847(root).verify()
    _vocab(root, 847, "ade847.json")
    ds = ADE847(root)
    ds.verify()
    _, labels = ds.load(ds.items()[0])
    assert labels.dtype == np.int64 and labels.tolist() == [[0, 846, 65535], [846, 3, 65535]]
    assert ds.synonyms()[5] == ["thing5", "synonym5"]


def test_pascal_context_59_and_459(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2010"
    _pair(root, PascalContext59, "2008_000001", np.array([[0, 58, 255]]))
    _pair(root, PascalContext459, "2008_000001", np.array([[0, 458, 459]]))
    _vocab(root, 459, "pc459.json")
    for cls, want in ((PascalContext59, [[0, 58, 255]]), (PascalContext459, [[0, 458, 459]])):
        ds = cls(root)
        ds.verify()
        assert ds.load(ds.items()[0])[1].tolist() == want
    assert PascalContext459.ignore_index == 459


def test_voc20_drops_all_ignore_images_and_coco_reads(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    _pair(root, PascalVOC20, "a", np.array([[255, 19]]))
    _pair(root, PascalVOC20, "b", np.array([[255, 255]]))
    ds = PascalVOC20(root)
    scored = [ds.is_scored(ds.load(it)[1]) for it in ds.items()]
    assert scored == [True, False]
    coco = tmp_path / "coco-stuff"
    _pair(coco, CocoStuff171, "000000000009", np.array([[0, 170, 255]]))
    ds = CocoStuff171(coco)
    ds.verify()
    assert ds.load(ds.items()[0])[1].tolist() == [[0, 170, 255]]


def test_size_mismatch_is_a_clear_error_naming_the_file(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    _pair(root, ADE150, "ADE_val_00000007", np.ones((4, 6)), image_size=(8, 4))
    ds = ADE150(root)
    with pytest.raises(DataMissingError, match=r"ADE_val_00000007\.png.*6x4.*8x4"):
        ds.verify()
    with pytest.raises(DataMissingError, match=r"ADE_val_00000007\.png"):
        ds.load(ds.items()[0])


def test_missing_image_and_missing_folders_are_named(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    with pytest.raises(DataMissingError, match="dataset folder"):
        ADE150(root).verify()
    _pair(root, ADE150, "ADE_val_00000001", np.ones((2, 2)))
    (root / ADE150.image_dir / "ADE_val_00000001.jpg").unlink()
    with pytest.raises(DataMissingError, match=r"image of label .*ADE_val_00000001\.png"):
        ADE150(root).verify()


@pytest.mark.parametrize("cls,labels,bad", [
    (ADE150, np.array([[1, 151]]), "151"),
    (PascalContext59, np.array([[0, 59]]), "59"),
    (CocoStuff171, np.array([[171, 0]]), "171"),
])
def test_out_of_range_ids_are_rejected(tmp_path, cls, labels, bad):
    root = tmp_path / cls.folder
    _pair(root, cls, "x", labels)
    ds = cls(root)
    with pytest.raises(DataMissingError, match=rf"x\.png.*\[{bad}\]"):
        ds.load(ds.items()[0])


def test_fingerprint_follows_the_vocabulary_and_the_file_list(tmp_path):
    root = tmp_path / "ADE20K_2021_17_01"
    _pair(root, ADE847, "a", np.zeros((2, 2)))
    _vocab(root, 847, "ade847.json")
    fp = ADE847(root).fingerprint()
    _pair(root, ADE847, "b", np.zeros((2, 2)))
    fp2 = ADE847(root).fingerprint()
    (root / "ade847.json").write_text(json.dumps([f"other{i}" for i in range(847)]))
    assert len({fp, fp2, ADE847(root).fingerprint()}) == 3


def test_mini_generator_is_deterministic_and_read_by_the_real_layouts(tmp_path):
    for cls in (MiniCocoStuff, MiniADE):
        a, b = tmp_path / "a" / cls.folder, tmp_path / "b" / cls.folder
        cls.generate(a)
        cls.generate(b)
        files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
        assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
        ds = cls(a)
        ds.verify()
        assert len(ds.items()) == mini.SETS[cls.name]["n"]
        labels = np.stack([ds.load(it)[1] for it in ds.items()])
        assert (labels == 255).any()  # unlabelled boundary (train) or raw-0 "other" (test) → ignore
        assert set(np.unique(labels)) - {255} <= set(range(len(ds.classnames())))
        assert ds.fingerprint() == cls(b).fingerprint()
    assert MiniCocoStuff.label_dir == CocoStuff171.label_dir and MiniADE.label_dir == ADE150.label_dir
    train, test = set(mini.SETS["mini_ovss_train"]["classes"]), set(mini.SETS["mini_ovss"]["classes"])
    assert test - train and test & train  # some test classes are unseen in training


def test_generate_keeps_an_identical_tree(tmp_path):
    root = tmp_path / "mini_ovss"
    MiniADE.generate(root)
    marker = root / "keep.txt"
    marker.write_text("x")
    MiniADE.generate(root)
    assert marker.exists()
