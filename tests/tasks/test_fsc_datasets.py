"""The CoOp readers on hand-made trees in each real format, and the mini generator read back by them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.catalog import DATASETS
from harness.errors import DataMissingError
from tasks.fsc import mini
from tasks.fsc.datasets import (
    DTD,
    SUN397,
    UCF101,
    Caltech101,
    EuroSAT,
    FGVCAircraft,
    Food101,
    ImageNet,
    MiniCoOp,
    OxfordFlowers,
    OxfordPets,
    SplitJsonDataset,
    StanfordCars,
)

FSC_NAMES = {
    "mini_coop": "MiniCoOp", "imagenet": "ImageNet", "caltech101": "Caltech101", "oxford_pets": "OxfordPets",
    "stanford_cars": "StanfordCars", "oxford_flowers": "OxfordFlowers", "food101": "Food101",
    "fgvc_aircraft": "FGVCAircraft", "sun397": "SUN397", "dtd": "DTD", "eurosat": "EuroSAT",
    "ucf101": "UCF101",
}


def _img(path: Path, colour: tuple[int, int, int] = (10, 20, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), colour).save(path)


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "mini_coop"
    MiniCoOp.generate(root)
    return root


@pytest.fixture
def mini_copy(mini_root: Path, tmp_path: Path) -> Path:
    """A private copy for tests that damage the tree."""
    return Path(shutil.copytree(mini_root, tmp_path / "mini_coop"))


# -- registry and import hygiene -------------------------------------------------------------------


def test_registry_names_and_classvars() -> None:
    for name, cls_name in FSC_NAMES.items():
        cls = DATASETS.get(name)
        assert cls.__name__ == cls_name and cls.name == name and cls.task_family == "fsc"
        assert cls.folder and cls.prepare_hint and f"$HARNESS_DATA/{cls.folder}" in cls.prepare_hint
        assert cls.coop_templates and all("{}" in t for t in cls.coop_templates)
    assert DATASETS.get("mini_coop").embedded and not DATASETS.get("dtd").embedded
    assert DTD.coop_templates == ("{} texture.",)
    assert EuroSAT.coop_templates == ("a centered satellite photo of {}.",)


# The method's prompt sets per dataset (Vermouth's Classification/data/templates.json at 5597f28, counted there);
# mini_coop has none of its own and uses the ImageNet list.
METHOD_COUNTS = {"imagenet": 81, "caltech101": 34, "oxford_pets": 1, "stanford_cars": 8, "oxford_flowers": 1,
                 "food101": 1, "fgvc_aircraft": 2, "sun397": 2, "dtd": 8, "eurosat": 3, "ucf101": 48, "mini_coop": 81}


def test_each_dataset_resolves_the_methods_template_set_and_coops_prompt() -> None:
    from tasks.fsc.task import class_templates

    for name in FSC_NAMES:
        cls = DATASETS.get(name)
        method = class_templates(cls, "method")
        assert len(method) == METHOD_COUNTS[name], name
        assert all(t.count("{}") == 1 for t in method), name
        assert class_templates(cls, "coop") == cls.coop_templates and len(cls.coop_templates) == 1
    # spot checks against the source file, read by hand
    assert class_templates(DTD, "method")[0] == "a photo of a {} texture."
    assert class_templates(FGVCAircraft, "method") == ("a photo of a {}, a type of aircraft.",
                                                       "a photo of the {}, a type of aircraft.")
    assert class_templates(EuroSAT, "method")[2] == "a centered satellite photo of the {}."
    assert class_templates(UCF101, "method")[0] == "a photo of a person {}."
    assert class_templates(MiniCoOp, "method") == class_templates(ImageNet, "method")
    assert class_templates(MiniCoOp, "coop") == ("a photo of a {}.",)


def test_templates_file_names_its_source_and_holds_only_the_eleven_datasets() -> None:
    data = json.loads((Path(__file__).parents[2] / "tasks" / "fsc" / "templates.json").read_text())
    assert "develop-productivity/Vermouth" in data["_source"] and "5597f28" in data["_source"]
    assert "Classification/data/templates.json" in data["_source"]
    assert set(data) - {"_source"} == set(FSC_NAMES) - {"mini_coop"}


VERMOUTH = Path("/work/.mirror/develop-productivity+Vermouth/repo")
VERMOUTH_KEYS = {"oxford_flowers": "flowers", "fgvc_aircraft": "aircraft"}


@pytest.mark.skipif(not VERMOUTH.is_dir(), reason="no local snapshot of the Vermouth repository")
def test_templates_are_the_vermouth_lists_verbatim() -> None:
    proc = subprocess.run(["git", "-C", str(VERMOUTH), "show", "5597f28:Classification/data/templates.json"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip("the snapshot does not hold commit 5597f28")
    source = json.loads(proc.stdout)
    from tasks.fsc.task import class_templates

    for name in set(FSC_NAMES) - {"mini_coop"}:
        assert list(class_templates(DATASETS.get(name), "method")) == source[VERMOUTH_KEYS.get(name, name)]["templates"]


def test_modules_import_without_torch() -> None:
    code = ("import sys, tasks.fsc.datasets, tasks.fsc.sampling, tasks.fsc.mini; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- mini generator ------------------------------------------------------------------------------------


def test_mini_generation_is_deterministic(mini_root: Path, tmp_path: Path) -> None:
    other = tmp_path / "again" / "mini_coop"
    MiniCoOp.generate(other)
    split = mini_root / "split_zhou_MiniCoOp.json"
    assert split.read_bytes() == (other / split.name).read_bytes()
    files = sorted(p.relative_to(mini_root) for p in mini_root.rglob("*.png"))
    assert files == sorted(p.relative_to(other) for p in other.rglob("*.png"))
    for rel in files[::37]:
        assert np.array_equal(np.asarray(Image.open(mini_root / rel)), np.asarray(Image.open(other / rel)))
    assert [p.name for p in other.parent.iterdir()] == ["mini_coop"]  # no temp folder left behind


def test_mini_layout_and_counts(mini_root: Path) -> None:
    data = json.loads((mini_root / "split_zhou_MiniCoOp.json").read_text())
    assert set(data) == {"train", "val", "test"}
    names = sorted({c for _, _, c in data["train"]})
    assert len(names) == 12 and tuple(names) == mini.CLASSNAMES
    assert len({tuple(n.split("_")) for n in names}) == 12
    # train 16 / val 4 per class: the 16-shot protocol; test 40 per class: 480 images, so one image is ~0.2
    # points of top-1 and the binomial standard error ~2 points (a noise-aware regression gate can see a drop)
    assert mini.PER_CLASS == {"train": 16, "val": 4, "test": 40}
    for split, per_class in mini.PER_CLASS.items():
        for label, name in enumerate(names):
            entries = [e for e in data[split] if e[1] == label]
            assert len(entries) == per_class and all(e[2] == name for e in entries)
            assert all(e[0].startswith(f"{name}/{name}_") and e[0].endswith(".png") for e in entries)
    assert len(list((mini_root / "images").rglob("*.png"))) == 12 * 60
    with Image.open(mini_root / "images" / data["test"][0][0]) as im:
        assert im.mode == "RGB" and im.size == (96, 96)


def test_mini_read_back_by_the_real_reader(mini_root: Path) -> None:
    ds = MiniCoOp(mini_root)
    ds.verify()
    splits = ds.splits()
    assert {k: len(v) for k, v in splits.items()} == {"train": 192, "val": 48, "test": 480}
    assert ds.classnames() == list(mini.CLASSNAMES)
    item = splits["train"][0]
    assert ds.image_path(item) == mini_root / "images" / item.path
    assert ds.load_image(item).size == (96, 96)
    fp = ds.fingerprint()
    assert len(fp) == 64 and fp == MiniCoOp(mini_root).fingerprint()


def test_mini_fingerprint_tracks_version_and_split(mini_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fp = MiniCoOp(mini_copy).fingerprint()
    monkeypatch.setattr(mini, "MINI_VERSION", "999")
    assert MiniCoOp(mini_copy).fingerprint() != fp
    monkeypatch.undo()
    split = mini_copy / "split_zhou_MiniCoOp.json"
    split.write_text(split.read_text() + "\n")
    assert MiniCoOp(mini_copy).fingerprint() != fp


def test_generate_keeps_an_identical_tree_and_replaces_another(mini_copy: Path) -> None:
    (mini_copy / "marker.txt").write_text("untouched")
    MiniCoOp.generate(mini_copy)  # same version and seed: a concurrent reader must not be disturbed
    assert (mini_copy / "marker.txt").exists()
    (mini_copy / ".mini_version").write_text("0 1\n")  # a stale tree from another generator version
    MiniCoOp.generate(mini_copy)
    assert not (mini_copy / "marker.txt").exists()
    assert (mini_copy / ".mini_version").read_text() == f"{mini.MINI_VERSION} {mini.SEED}\n"
    MiniCoOp(mini_copy).verify()
    assert [p.name for p in mini_copy.parent.iterdir()] == ["mini_coop"]


# -- verify names the first missing or malformed file ------------------------------------------------------


def test_verify_names_a_missing_image(mini_copy: Path) -> None:
    ds = MiniCoOp(mini_copy)
    victim = ds.image_path(ds.splits()["val"][5])
    victim.unlink()
    with pytest.raises(DataMissingError, match="is missing") as err:
        MiniCoOp(mini_copy).verify()
    assert str(victim) in str(err.value)


def test_missing_root_names_the_path_and_the_hint(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError) as err:
        Caltech101(tmp_path / "caltech-101").verify()
    msg = str(err.value)
    assert str(tmp_path / "caltech-101") in msg and "$HARNESS_DATA/caltech-101" in msg
    assert "split_zhou_Caltech101.json" in msg
    with pytest.raises(DataMissingError):
        Caltech101(tmp_path / "caltech-101").splits()


def test_missing_split_file(mini_copy: Path) -> None:
    (mini_copy / "split_zhou_MiniCoOp.json").unlink()
    for call in (MiniCoOp(mini_copy).verify, MiniCoOp(mini_copy).splits, MiniCoOp(mini_copy).fingerprint):
        with pytest.raises(DataMissingError, match="split_zhou_MiniCoOp.json"):
            call()


def _good_split() -> dict[str, list[list[object]]]:
    return {"train": [["a/1.jpg", 0, "cat"], ["b/1.jpg", 1, "dog"]], "val": [["a/2.jpg", 0, "cat"]],
            "test": [["b/2.jpg", 1, "dog"]]}


@pytest.mark.parametrize("mutate, why", [
    (lambda d: "{not json", "not valid JSON"),
    (lambda d: [d["train"]], "keys train, val and test"),
    (lambda d: {**d, "val": None}, "keys train, val and test"),
    (lambda d: {**d, "train": [["a/1.jpg", "0", "cat"], *d["train"][1:]]}, r"train\[0\]"),
    (lambda d: {**d, "train": [["a/1.jpg", 0], *d["train"][1:]]}, r"train\[0\]"),
    (lambda d: {**d, "test": [["b/2.jpg", 1, "cow"]]}, r"test\[0\]: label 1 / class 'cow'"),
    (lambda d: {**d, "test": [["b/2.jpg", 0, "dog"]]}, r"test\[0\]: label 0 / class 'dog'"),
    (lambda d: {**d, "train": [["a/1.jpg", 0, "cat"], ["b/1.jpg", 2, "dog"]], "test": []}, "not contiguous"),
    (lambda d: {**d, "test": [["c/1.jpg", 2, "cow"]]}, "not in train"),
    (lambda d: {**d, "train": [["/abs/1.jpg", 0, "cat"], *d["train"][1:]]}, "not relative"),
])
def test_malformed_split_json_names_the_file(tmp_path: Path, mutate: Callable[[dict], object],
                                             why: str) -> None:
    root = tmp_path / "dtd"
    (root / "images").mkdir(parents=True)
    data = mutate(_good_split())
    path = root / DTD.split_file
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    with pytest.raises(DataMissingError, match=why) as err:
        DTD(root).verify()
    assert str(path) in str(err.value) and "malformed" in str(err.value)


def test_mini_malformed_json(mini_copy: Path) -> None:
    path = mini_copy / "split_zhou_MiniCoOp.json"
    data = json.loads(path.read_text())
    data["val"][3][1] = 3.0
    path.write_text(json.dumps(data))
    with pytest.raises(DataMissingError, match=r"val\[3\]") as err:
        MiniCoOp(mini_copy).verify()
    assert str(path) in str(err.value)


# -- hand-made trees in the real formats -------------------------------------------------------------


@pytest.mark.parametrize("cls, classes", [
    (Caltech101, ["accordion", "airplane", "face"]),
    (DTD, ["banded", "blotchy", "braided"]),
    (StanfordCars, ["2012 Tesla Model S", "2012 BMW M3 coupe", "1993 Volvo 240 Sedan"]),
    (EuroSAT, ["Annual Crop Land", "Forest", "Highway or Road"]),
    (OxfordPets, ["abyssinian", "american_bulldog", "beagle"]),
    (OxfordFlowers, ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"]),
    (Food101, ["apple_pie", "baby_back_ribs", "baklava"]),
    (SUN397, ["abbey", "airplane_cabin", "airport_terminal"]),
    (UCF101, ["Apply_Eye_Makeup", "Apply_Lipstick", "Archery"]),
])
def test_split_json_tree(tmp_path: Path, cls: type[SplitJsonDataset], classes: list[str]) -> None:
    root = tmp_path / cls.folder
    split: dict[str, list[list[object]]] = {"train": [], "val": [], "test": []}
    # Written out of label order: class names must come from sorted (label, classname) pairs.
    for label in (2, 0, 1):
        folder = "cars_train" if cls is StanfordCars else f"cls{label}"
        for split_name, n in (("train", 3), ("val", 1), ("test", 2)):
            for i in range(n):
                rel = f"{folder}/{split_name}_{label}_{i}.jpg"
                _img(root / cls.image_dir / rel)
                split[split_name].append([rel, label, classes[label]])
    (root / cls.split_file).write_text(json.dumps(split))
    ds = cls(root)
    ds.verify()
    assert ds.classnames() == classes
    splits = ds.splits()
    assert [(it.path, it.label, it.classname) for it in splits["train"]] == [tuple(e) for e in split["train"]]
    assert {k: len(v) for k, v in splits.items()} == {"train": 9, "val": 3, "test": 6}
    item = splits["test"][0]
    assert ds.image_path(item) == root / cls.image_dir / item.path and ds.image_path(item).is_file()
    assert ds.load_image(item).mode == "RGB"
    assert ds.fingerprint() == cls(root).fingerprint()


def test_fgvc_aircraft_tree(tmp_path: Path) -> None:
    root = tmp_path / "fgvc_aircraft"
    variants = ["707-320", "Cessna 172", "Boeing 717"]
    root.mkdir()
    (root / "variants.txt").write_text("\n".join(variants) + "\n")
    lines = {"train": ["1025794 707-320", "0056978 Cessna 172", "1234567 Boeing 717", "7654321 Cessna 172"],
             "val": ["2000001 Boeing 717"], "test": ["3000001 707-320", "3000002 Cessna 172"]}
    for split, rows in lines.items():
        (root / f"images_variant_{split}.txt").write_text("\n".join(rows) + "\n")
        for row in rows:
            _img(root / "images" / f"{row.split(' ')[0]}.jpg")
    ds = FGVCAircraft(root)
    ds.verify()
    assert ds.classnames() == variants
    train = ds.splits()["train"]
    assert [(it.path, it.label, it.classname) for it in train] == [
        ("1025794.jpg", 0, "707-320"), ("0056978.jpg", 1, "Cessna 172"),
        ("1234567.jpg", 2, "Boeing 717"), ("7654321.jpg", 1, "Cessna 172")]
    assert ds.image_path(train[1]) == root / "images" / "0056978.jpg"
    fp = ds.fingerprint()
    (root / "images_variant_test.txt").write_text("3000001 707-320\n")
    assert FGVCAircraft(root).fingerprint() != fp
    (root / "images_variant_val.txt").write_text("2000001 Boeing 747\n")
    with pytest.raises(DataMissingError, match="line 1") as err:
        FGVCAircraft(root).verify()
    assert str(root / "images_variant_val.txt") in str(err.value)
    (root / "variants.txt").unlink()
    with pytest.raises(DataMissingError, match="variants.txt"):
        FGVCAircraft(root).verify()


def test_imagenet_tree(tmp_path: Path) -> None:
    root = tmp_path / "imagenet"
    root.mkdir()
    # classnames.txt out of wnid order: the label is the index of the sorted wnid folder.
    names = {"n01484850": "great white shark", "n01440764": "tench", "n01443537": "goldfish"}
    (root / "classnames.txt").write_text("".join(f"{w} {n}\n" for w, n in names.items()))
    for wnid in names:
        for i in range(3):
            _img(root / "images" / "train" / wnid / f"{wnid}_{i}.JPEG")
        _img(root / "images" / "val" / wnid / f"ILSVRC2012_val_{wnid}.JPEG")
    (root / "images" / "train" / "n01440764" / ".DS_Store").write_text("")
    ds = ImageNet(root)
    ds.verify()
    assert ds.classnames() == ["tench", "goldfish", "great white shark"]
    splits = ds.splits()
    # No val split: ILSVRC's val folder is the test split (the few-shot val comes from train, sampling.py).
    assert len(splits["train"]) == 9 and splits["val"] == [] and len(splits["test"]) == 3
    assert splits["train"][0].model_dump() == {"path": "train/n01440764/n01440764_0.JPEG", "label": 0,
                                               "classname": "tench"}
    assert {(it.label, it.classname) for it in splits["test"]} == {(0, "tench"), (1, "goldfish"),
                                                                   (2, "great white shark")}
    shark = root / "images" / "val" / "n01484850" / "ILSVRC2012_val_n01484850.JPEG"
    assert ds.image_path(splits["test"][2]) == shark
    assert len(ds.fingerprint()) == 64
    shutil.rmtree(root / "images" / "val" / "n01443537")
    with pytest.raises(DataMissingError) as err:
        ImageNet(root).verify()
    assert str(root / "images" / "val" / "n01443537") in str(err.value)
    (root / "classnames.txt").unlink()
    with pytest.raises(DataMissingError, match="classnames.txt"):
        ImageNet(root).splits()
