"""ImageNet's few-shot val comes from its train split, never its test split (CoOp's test images).

A tiny tree in ImageNet's on-disk layout (images/train/<wnid>/*.JPEG, images/val/<wnid>/*.JPEG, classnames.txt)
is opened by the real reader and drawn exactly as the FSC task draws it (`tasks.fsc.task.fewshot_parts`, which
persists the draw under HARNESS_HOME); the oracle is the set of files written to each folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from harness.paths import harness_home
from tasks.fsc.datasets import ImageNet
from tasks.fsc.sampling import fewshot_path
from tasks.fsc.task import fewshot_parts

WNIDS = {"n01440764": "tench", "n01443537": "goldfish", "n01484850": "great white shark",
         "n01491361": "tiger shark"}
N_TRAIN, N_TEST = 12, 5


def _jpeg(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade, 255 - shade, 40)).save(path, "JPEG")


@pytest.fixture
def imagenet(tmp_path: Path) -> tuple[Path, set[str], set[str]]:
    """The tree, and the image paths (relative to images/) written under train/ and under val/."""
    root = tmp_path / "imagenet"
    root.mkdir()
    (root / "classnames.txt").write_text("".join(f"{w} {n}\n" for w, n in WNIDS.items()))
    written: dict[str, set[str]] = {"train": set(), "val": set()}
    for c, wnid in enumerate(WNIDS):
        for split, n in (("train", N_TRAIN), ("val", N_TEST)):
            for i in range(n):
                rel = f"{split}/{wnid}/{wnid}_{split}_{i}.JPEG"
                _jpeg(root / "images" / rel, 20 * c + i)
                written[split].add(rel)
    return root, written["train"], written["val"]


@pytest.mark.parametrize("shots", [1, 4, 8, 10])
def test_fewshot_val_is_drawn_from_train_disjoint_from_support_and_never_from_test(imagenet, shots):
    root, train_files, test_files = imagenet
    ds = ImageNet(root)
    ds.verify()
    parts, draw = fewshot_parts(ds, shots, seed=1)
    support = [it.path for it in parts["train"]]
    val = [it.path for it in parts["val"]]
    test = {it.path for it in parts["test"]}
    assert test == test_files  # the ILSVRC val folder is the test split, whole
    assert set(support) <= train_files and len(set(support)) == len(support) == shots * len(WNIDS)
    val_shots = min(shots, 4)
    per_class = min(val_shots, N_TRAIN - shots)  # 10 shots leave 2 per class: a short class keeps them all
    assert len(set(val)) == len(val) == per_class * len(WNIDS)
    assert set(val) <= train_files  # from train ...
    assert not set(val) & set(support)  # ... but not the support ...
    assert not set(val) & test_files and not set(support) & test_files  # ... and never a test image
    for label in range(len(WNIDS)):  # min(K, 4) per class, each from its own class folder
        mine = [it for it in parts["val"] if it.label == label]
        assert len(mine) == per_class and {Path(it.path).parts[1] for it in mine} == {list(WNIDS)[label]}
    assert draw["info"]["val_from"] == "train" and draw["info"]["val_shots"] == val_shots
    short = {} if per_class == val_shots else dict.fromkeys(range(len(WNIDS)), per_class)
    assert draw["info"]["val"]["short_classes"] == short
    assert fewshot_path(harness_home(), "imagenet", ds.fingerprint(), shots, 1).is_file()  # persisted


def test_the_same_seed_gives_the_same_split_and_another_seed_another(imagenet, tmp_path, monkeypatch):
    root, _, _ = imagenet
    first, _ = fewshot_parts(ImageNet(root), 4, seed=3)
    # A fresh HARNESS_HOME: nothing persisted, so this is a new draw with the same seed, not a read-back.
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "other-home"))
    again, _ = fewshot_parts(ImageNet(root), 4, seed=3)
    other, _ = fewshot_parts(ImageNet(root), 4, seed=4)
    paths = {k: [it.path for it in v] for k, v in first.items()}
    assert {k: [it.path for it in v] for k, v in again.items()} == paths
    assert [it.path for it in other["val"]] != paths["val"]


def test_the_fingerprint_names_the_val_rule(imagenet):
    """A fingerprint unlike the class file's plain hash: jobs and few-shot files of the test-as-val rule never mix."""
    from harness.io import canonical_json, sha256_file, sha256_text

    root, _, _ = imagenet
    plain = sha256_text(canonical_json({"classnames.txt": sha256_file(root / "classnames.txt")}))
    assert ImageNet(root).fingerprint() not in (plain, "")
    assert ImageNet(root).fingerprint() == ImageNet(root).fingerprint()
