"""`harness data verify`: plain checks existence only; `--deep` decodes every image and names the bad files.

The oracle is the set of files each test damages itself: every damaged file must be named in its category,
and no other file may be named.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from harness.catalog import DATASETS
from harness.data.verify import MAX_PIXELS, check_file, deep_verify
from harness.plan.planner import open_dataset
from tasks.fsc.datasets import MiniCoOp


def _png_declaring(path: Path, width: int, height: int) -> None:
    """A PNG whose IHDR declares width x height (1-bit grey) with a tiny IDAT: cheap to write, and a decoder
    that tried to decode it would fail as truncated, so 'oversized' proves only the header was read."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gen") / "mini_coop"
    MiniCoOp.generate(root)
    return root


@pytest.fixture
def mini(mini_root: Path) -> Path:
    """A private copy at $HARNESS_DATA/mini_coop (the per-test data root of tests/conftest.py)."""
    return Path(shutil.copytree(mini_root, Path(os.environ["HARNESS_DATA"]) / "mini_coop", symlinks=True))


def _damage(root: Path, tmp_path: Path) -> dict[Path, str]:
    """Damage eight listed images in place; returns {path: expected category} for those that must be named
    (the link to a whole image outside the tree is not one of them: see `linked_outside`)."""
    ds = MiniCoOp(root)
    paths = [ds.image_path(it) for it in ds.splits()["test"]]
    zero, truncated, text, passwd, huge, bomb, outside, inside_link = paths[:8]
    zero.write_bytes(b"")
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 3])
    text.write_text("this is not a picture\n")
    passwd.unlink()
    passwd.symlink_to("/etc/passwd")
    _png_declaring(huge, 30000, 30000)  # 900 MP: over twice Pillow's limit (an error in Pillow)
    _png_declaring(bomb, 10000, MAX_PIXELS // 10000 + 1)  # just over the limit (a warning in Pillow)
    good = tmp_path / "elsewhere.png"  # a valid image outside the dataset folder: linked, not a problem
    Image.new("RGB", (8, 8), (1, 2, 3)).save(good)
    outside.unlink()
    outside.symlink_to(os.path.relpath(good, outside.parent))  # relative link climbing out of the tree
    inside_link.unlink()
    inside_link.symlink_to(os.path.relpath(paths[20], inside_link.parent))  # a link that stays inside: fine
    return {zero: "empty", truncated: "malformed", text: "malformed", passwd: "out-of-tree", huge: "oversized",
            bomb: "oversized"}


@pytest.mark.parametrize("workers", [0, 2])
def test_deep_names_each_damaged_file_in_its_category(mini, tmp_path, workers):
    expected = _damage(mini, tmp_path)
    report = deep_verify(MiniCoOp(mini), workers=workers)
    assert {f.path: f.category for f in report.findings} == expected
    assert report.checked == 720  # 12 classes x (16 + 4 + 40), each file once
    assert report.counts() == {"empty": 1, "malformed": 2, "oversized": 2, "out-of-tree": 1}
    outside = MiniCoOp(mini).image_path(MiniCoOp(mini).splits()["test"][6])
    assert [(f.category, f.path) for f in report.linked] == [("linked outside", outside)]
    why = {f.path: f.why for f in report.findings}
    test = [MiniCoOp(mini).image_path(it) for it in MiniCoOp(mini).splits()["test"]]
    assert "truncated" in why[test[1]] and "not an image" in why[test[2]]  # the orders of _damage
    assert why[test[3]].startswith("resolves to /etc/passwd") and "not an image" in why[test[3]]


def test_plain_verify_still_checks_existence_only(mini, tmp_path):
    _damage(mini, tmp_path)
    MiniCoOp(mini).verify()  # every damaged file still exists: no error
    plain = harness("data", "verify", "mini_coop")
    assert plain.returncode == 0, plain.stderr
    deep = harness("data", "verify", "mini_coop", "--deep", "--workers", "2")
    assert deep.returncode == 2 and "Traceback" not in deep.stderr
    lines = [line for line in deep.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "6 of 720 images are unusable (1 empty, 2 malformed, 2 oversized, 1 out-of-tree)" in lines[0]
    for category in ("empty", "malformed", "oversized", "out-of-tree"):
        assert category in deep.stdout


def test_deep_on_a_clean_tree_exits_zero(mini):
    proc = harness("data", "verify", "mini_coop", "--deep")
    assert proc.returncode == 0, proc.stderr
    assert "mini_coop: 720 images decoded, all fine" in proc.stdout
    wrong = harness("data", "verify", "mini_coop", "--workers", "2")
    assert wrong.returncode == 2 and wrong.stderr.strip() == "error: --workers goes with --deep"


def test_deep_names_a_missing_image_where_plain_stops_at_it(mini):
    ds = MiniCoOp(mini)
    gone = ds.image_path(ds.splits()["val"][0])
    gone.unlink()
    report = deep_verify(ds, workers=0)
    assert [(f.category, f.path) for f in report.findings] == [("missing", gone)]


def test_a_fifo_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # opening it for reading would block forever
    assert check_file(str(fifo), str(tmp_path.resolve()))[:2] == ("malformed", "not a regular file")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "link.jpg").symlink_to(fifo)  # out of the tree, to a FIFO: refused, still without opening it
    category, why, _ = check_file(str(tree / "link.jpg"), str(tree.resolve()))
    assert category == "out-of-tree" and why.endswith("not a regular file")


def test_deep_checks_segmentation_images_and_label_maps():
    ds = open_dataset("mini_ovss")  # generated into this test's $HARNESS_DATA
    items = ds.items()
    with Image.open(items[0].image) as im:
        w, h = im.size
    Image.new("RGB", (w + 1, h), (0, 0, 0)).save(items[0].image)  # no longer the label map's size
    items[1].label.write_bytes(items[1].label.read_bytes()[:40])  # a truncated label map
    report = deep_verify(DATASETS.get("mini_ovss")(ds.root), workers=0)
    assert report.checked == 2 * len(items)
    assert {(f.category, f.path) for f in report.findings} == {("malformed", items[0].label),
                                                               ("malformed", items[1].label)}
