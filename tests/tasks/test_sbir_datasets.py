"""SBIR readers on small generated trees in each real layout, broken trees, and the mini generator."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from harness.catalog import DATASETS
from harness.errors import DataMissingError
from harness.plan.planner import open_dataset
from tasks.sbir import mini
from tasks.sbir.datasets import MiniSBIR, QuickDraw30, Sketchy21, Sketchy25, TUBerlin30
from tasks.sbir.metrics import PRECISION_KS, TOPK


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), "white").save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()


def write_split(root: Path, split_dir: str, sketch_list: str, photo_list: str, seen: list[str],
                unseen: list[str], sketch_path: str, photo_path: str, per_class: int = 2) -> None:
    """A SAKE-style split folder plus the images its lists name (`{c}` = class folder, `{n}` = index)."""
    base = root / split_dir
    base.mkdir(parents=True, exist_ok=True)
    (base / "cname_cid.txt").write_text("".join(f"{c} {i}\n" for i, c in enumerate(seen)))
    (base / "cname_cid_zero.txt").write_text("".join(f"{c} {i}\n" for i, c in enumerate(unseen)))
    for part, classes in (("train", seen), ("zero", unseen)):
        for pattern, template in ((sketch_list, sketch_path), (photo_list, photo_path)):
            lines = []
            for label, cname in enumerate(classes):
                for n in range(per_class):
                    rel = template.format(c=cname, n=n + 1)
                    (root / rel).parent.mkdir(parents=True, exist_ok=True)
                    (root / rel).write_bytes(PNG)
                    lines.append(f"{rel} {label}\n")
            (base / pattern.format(part)).write_text("".join(lines))


SKETCHY = dict(sketch_list="sketch_tx_000000000000_ready_filelist_{}.txt", photo_list="all_photo_filelist_{}.txt",
               sketch_path="256x256/sketch/tx_000000000000_ready/{c}/n0000_{n}-1.png",
               photo_path="256x256/photo/tx_000000000000_ready/{c}/n0000_{n}.jpg")
SEEN_SKETCHY = ["ant", "hot-air_balloon", "car_(sedan)"]


@pytest.fixture
def sketchy_root(tmp_path) -> Path:
    """Both Sketchy splits under ZSE-SBIR's folder names: zeroshot1 = 25 classes, zeroshot0 = 21 classes."""
    root = tmp_path / "data" / "Sketchy"
    write_split(root, "zeroshot1", seen=SEEN_SKETCHY, unseen=list(Sketchy25.unseen_classes), **SKETCHY)
    write_split(root, "zeroshot0", seen=SEEN_SKETCHY, unseen=list(Sketchy21.unseen_classes), **SKETCHY)
    # the extended photos live in another folder of the same dataset
    ext = root / "EXTEND_image_sketchy_ready" / "cup" / "ext_1.jpg"
    ext.parent.mkdir(parents=True)
    ext.write_bytes(PNG)
    with open(root / "zeroshot1" / "all_photo_filelist_zero.txt", "a") as f:
        f.write("EXTEND_image_sketchy_ready/cup/ext_1.jpg 0\n")
    return root


def test_sketchy_splits_are_found_by_their_class_lists(sketchy_root):
    s25, s21 = open_dataset("sketchy_25"), open_dataset("sketchy_21")
    assert isinstance(s25, Sketchy25) and s25.root == sketchy_root
    s25.verify()
    s21.verify()
    assert (s25.split_dir(), s21.split_dir()) == ("zeroshot1", "zeroshot0")
    splits = s25.splits()
    assert {k: len(v) for k, v in splits.items()} == {"sketch_train": 6, "photo_train": 6, "sketch_zero": 50,
                                                      "photo_zero": 51}
    assert s25.seen_classnames() == SEEN_SKETCHY
    assert s25.unseen_classnames() == list(Sketchy25.unseen_classes)
    names = s25.classnames()
    for items in splits.values():
        assert all(names[it.label] == it.classname for it in items)
    assert max(it.label for it in splits["photo_train"]) < 3 <= min(it.label for it in splits["photo_zero"])
    ext = splits["photo_zero"][-1]
    assert ext.path == "EXTEND_image_sketchy_ready/cup/ext_1.jpg" and ext.classname == "cup"
    assert s25.image_path(ext) == sketchy_root / ext.path
    assert s25.fingerprint() != s21.fingerprint()


def test_sakes_folder_names_work_too(tmp_path):
    root = tmp_path / "data" / "Sketchy"
    write_split(root, "zeroshot2", seen=SEEN_SKETCHY, unseen=list(Sketchy21.unseen_classes), **SKETCHY)
    ds = open_dataset("sketchy_21")
    ds.verify()
    assert ds.split_dir() == "zeroshot2"
    with pytest.raises(DataMissingError, match="no split folder lists the 25 unseen classes of sketchy_25"):
        open_dataset("sketchy_25").verify()


def test_tuberlin_layout_with_spaces_in_names_and_paths(tmp_path):
    root = tmp_path / "data" / "TUBerlin"
    seen = ["airplane", "alarm clock", "teddy-bear"]
    write_split(root, "zeroshot", "png_ready_filelist_{}.txt", "ImageResized_ready_filelist_{}.txt", seen,
                list(TUBerlin30.unseen_classes), "png_ready/{c}/{n}.png", "ImageResized_ready/{c}/n0000_{n}.JPEG")
    ds = open_dataset("tuberlin_30")
    ds.verify()
    items = ds.splits()["photo_zero"]
    balloon = [it for it in items if it.classname == "hot air balloon"]
    assert [it.path for it in balloon] == ["ImageResized_ready/hot air balloon/n0000_1.JPEG",
                                           "ImageResized_ready/hot air balloon/n0000_2.JPEG"]
    assert ds.seen_classnames() == seen and len(ds.unseen_classnames()) == 30
    assert ds.published_counts == (2400, 27989)


def test_quickdraw_layout(tmp_path):
    root = tmp_path / "data" / "QuickDraw"
    write_split(root, "zeroshot", "sketch_{}.txt", "all_photo_{}.txt", ["apple", "alarm clock"],
                list(QuickDraw30.unseen_classes), "sketches/{c}/g{n}.png", "images/{c}/image_{n}.jpg")
    ds = open_dataset("quickdraw_30")
    ds.verify()
    assert "palm tree" in ds.unseen_classnames() and len(ds.splits()["sketch_zero"]) == 60


def test_every_sbir_dataset_is_registered_with_its_exact_name():
    for name, cls in [("mini_sbir", MiniSBIR), ("sketchy_25", Sketchy25), ("sketchy_21", Sketchy21),
                      ("tuberlin_30", TUBerlin30), ("quickdraw_30", QuickDraw30)]:
        assert DATASETS.get(name) is cls
        assert cls.task_family == "sbir"


# -- broken trees ------------------------------------------------------------------------------


def test_missing_dataset_folder_prints_the_download_steps(tmp_path):
    with pytest.raises(DataMissingError) as err:
        open_dataset("tuberlin_30").verify()
    msg = str(err.value)
    assert "dataset folder" in msg and str(tmp_path / "data" / "TUBerlin") in msg
    assert "png_ready_filelist_{train,zero}.txt" in msg and "ImageResized_ready" in msg


def test_missing_list_file_is_named(sketchy_root):
    (sketchy_root / "zeroshot1" / "all_photo_filelist_train.txt").unlink()
    with pytest.raises(DataMissingError, match=r"a file list is missing: .*zeroshot1/all_photo_filelist_train.txt"):
        open_dataset("sketchy_25").verify()


def test_missing_image_is_named(sketchy_root):
    (sketchy_root / "256x256/sketch/tx_000000000000_ready/cup/n0000_2-1.png").unlink()
    with pytest.raises(DataMissingError, match=r"n0000_2-1.png") as err:
        open_dataset("sketchy_25").verify()
    assert "sketch_tx_000000000000_ready_filelist_zero.txt" in str(err.value)


@pytest.mark.parametrize("line, why", [
    ("256x256/sketch/tx_000000000000_ready/ant/x.png", "expected '<relative/path> <int label>'"),
    ("256x256/sketch/tx_000000000000_ready/ant/x.png zero", "expected '<relative/path> <int label>'"),
    ("256x256/sketch/tx_000000000000_ready/ant/x.png 7", "unknown class id 7"),
    ("/abs/x.png 0", "not relative"),
    ("../x.png 0", "not relative"),
])
def test_malformed_list_lines_are_named_with_their_line(sketchy_root, line, why):
    path = sketchy_root / "zeroshot1" / "sketch_tx_000000000000_ready_filelist_train.txt"
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(DataMissingError, match="malformed file") as err:
        open_dataset("sketchy_25").splits()
    assert why in str(err.value) and "line 7" in str(err.value) and str(path) in str(err.value)


def test_malformed_class_lists(sketchy_root):
    seen = sketchy_root / "zeroshot1" / "cname_cid.txt"
    seen.write_text("ant 0\nhot-air_balloon 2\n")
    with pytest.raises(DataMissingError, match="ids are not contiguous"):
        open_dataset("sketchy_25").splits()
    seen.write_text("ant 0\nno_id_here\n")
    with pytest.raises(DataMissingError, match=r"line 2: expected '<class name> <int id>'"):
        open_dataset("sketchy_25").splits()
    seen.write_text("ant 0\nteddy bear 1\ncar_(sedan) 2\n")  # an unseen class (teddy_bear) among the seen
    with pytest.raises(DataMissingError, match="seen classes that are also unseen.*teddybear"):
        open_dataset("sketchy_25").splits()


def test_an_unseen_class_without_gallery_photos_is_an_error(sketchy_root):
    path = sketchy_root / "zeroshot1" / "all_photo_filelist_zero.txt"
    path.write_text("".join(ln + "\n" for ln in path.read_text().splitlines() if "/bell/" not in ln))
    with pytest.raises(DataMissingError, match="unseen classes without a gallery photo: bell"):
        open_dataset("sketchy_25").splits()


def test_fingerprint_follows_the_lists(sketchy_root):
    before = open_dataset("sketchy_25").fingerprint()
    path = sketchy_root / "zeroshot1" / "all_photo_filelist_zero.txt"
    path.write_text(path.read_text() + "\n")
    assert open_dataset("sketchy_25").fingerprint() != before


# -- the mini dataset ----------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_mini_generator_is_deterministic_and_read_by_the_real_reader(tmp_path):
    mini.generate(tmp_path / "a" / "mini_sbir")
    mini.generate(tmp_path / "b" / "mini_sbir")
    a, b = _tree(tmp_path / "a" / "mini_sbir"), _tree(tmp_path / "b" / "mini_sbir")
    assert a == b and len(a) > 200
    ds = MiniSBIR(tmp_path / "a" / "mini_sbir")
    ds.verify()
    splits = ds.splits()
    assert len(splits["sketch_train"]) == mini.ORIGINALS * mini.SKETCHES_PER_PHOTO * len(mini.SEEN)
    assert len(splits["photo_train"]) == (mini.ORIGINALS + mini.EXTENDED) * len(mini.SEEN)
    queries = Counter(it.classname for it in splits["sketch_zero"])
    gallery = Counter(it.classname for it in splits["photo_zero"])
    assert queries == {c: mini.UNSEEN_COUNTS[c][0] * mini.SKETCHES_PER_PHOTO for c in mini.UNSEEN}
    assert gallery == {c: sum(mini.UNSEEN_COUNTS[c]) for c in mini.UNSEEN}
    assert set(ds.unseen_classnames()) == set(mini.UNSEEN) and "plus sign" in ds.unseen_classnames()
    assert any(it.path.startswith("EXTEND_image_sketchy_ready/") for it in splits["photo_zero"])
    sketch = ds.load_image(splits["sketch_zero"][0])
    photo = ds.load_image(splits["photo_zero"][0])
    assert sketch.size == photo.size == (mini.SIZE, mini.SIZE)
    assert sketch.getpixel((0, 0)) == (255, 255, 255)  # white background, strokes only


def test_mini_unseen_side_lets_every_reported_metric_move(tmp_path):
    """Each unseen class has more gallery photos than the largest K, so P@100, P@200 and mAP@200 are not
    capped by R/G and mAP@200 is not mAP@all; unequal query counts make the class average differ from the
    query average. (With 12 photos per class every backbone scored P@100 = P@200 = 33.33.)"""
    ds = open_dataset("mini_sbir")
    splits = ds.splits()
    gallery = Counter(it.classname for it in splits["photo_zero"])
    queries = Counter(it.classname for it in splits["sketch_zero"])
    assert set(gallery) == set(queries) == set(mini.UNSEEN)
    assert min(gallery.values()) > mini.TOP_K == max(PRECISION_KS) == TOPK
    assert len(set(queries.values())) == len(queries)  # no two unseen classes with the same query count
    assert len(splits["photo_train"]) + len(splits["sketch_train"]) < 200  # the training side stays small


def test_mini_is_generated_on_first_use_and_kept_when_identical(tmp_path):
    ds = open_dataset("mini_sbir")
    assert ds.root == tmp_path / "data" / "mini_sbir" and ds.is_present()
    marker = ds.root / mini.VERSION_FILE
    mtime = marker.stat().st_mtime_ns
    MiniSBIR.generate(ds.root)
    assert marker.stat().st_mtime_ns == mtime
    assert not [p for p in ds.root.parent.iterdir() if p.name.startswith(".mini_sbir")]
