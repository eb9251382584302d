"""`harness data prepare NAME --archive PATH`: malicious tar and zip archives are refused whole (the archive
and the member named, nothing written anywhere); good ones land where the dataset expects them and verify."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.archives import UnsafeArchiveError, destination, unpack, unpack_for_dataset
from harness.cli import app
from harness.errors import HarnessError


def tar_archive(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    """A gzipped tar of (name, bytes) files and hand-made TarInfo entries (links, devices...), in order."""
    with tarfile.open(path, "w:gz") as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    return path


def tar_entry(name: str, kind: bytes, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def zip_archive(path: Path, members: list[tuple[str, bytes] | zipfile.ZipInfo]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for m in members:
            if isinstance(m, zipfile.ZipInfo):
                zf.writestr(m, b"/etc/passwd")
            else:
                zf.writestr(m[0], m[1])
    return path


def zip_symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def snapshot(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")} | {str(p) for p in root.rglob(".*")}


GOOD = ("good/a.txt", b"fine")  # written first: an extractor that streams would have written it already

BAD_TARS = {
    "absolute": lambda out: [GOOD, (str(out / "evil.txt"), b"x")],
    "dotdot": lambda out: [GOOD, ("../outside/evil.txt", b"x")],
    "dotdot-deep": lambda out: [GOOD, ("good/../../outside/evil.txt", b"x")],
    "symlink-abs": lambda out: [GOOD, tar_entry("good/passwd", tarfile.SYMTYPE, "/etc/passwd")],
    "symlink-out": lambda out: [GOOD, tar_entry("good/up", tarfile.SYMTYPE, "../../outside")],
    "hardlink-abs": lambda out: [GOOD, tar_entry("good/passwd", tarfile.LNKTYPE, "/etc/passwd")],
    "hardlink-out": lambda out: [GOOD, tar_entry("good/x", tarfile.LNKTYPE, "../outside/evil.txt")],
    # a link to the target itself, then a link beneath it: lexically inside, physically one level up
    "through-symlink": lambda out: [GOOD, tar_entry("here", tarfile.SYMTYPE, "."),
                                    tar_entry("here/up", tarfile.SYMTYPE, "../outside")],
    # each target looks inside on its own; followed through each other they climb out
    "symlink-chain": lambda out: [GOOD, tar_entry("l2", tarfile.SYMTYPE, "."),
                                  tar_entry("l1", tarfile.SYMTYPE, "l2/..")],
    "fifo": lambda out: [GOOD, tar_entry("good/pipe", tarfile.FIFOTYPE)],
    "device": lambda out: [GOOD, tar_entry("good/sda", tarfile.BLKTYPE)],
}
BAD_MEMBER = {"absolute": "{out}/evil.txt", "dotdot": "../outside/evil.txt", "dotdot-deep": "good/../../outside",
              "symlink-abs": "good/passwd", "symlink-out": "good/up", "hardlink-abs": "good/passwd",
              "hardlink-out": "good/x", "through-symlink": "here/up", "symlink-chain": "l1", "fifo": "good/pipe",
              "device": "good/sda"}


@pytest.mark.parametrize("case", sorted(BAD_TARS))
def test_a_malicious_tar_is_refused_naming_the_member_and_writes_nothing(tmp_path, case):
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = tar_archive(tmp_path / f"{case}.tar.gz", BAD_TARS[case](outside))
    target = tmp_path / "data" / "target"
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeArchiveError) as err:
        unpack(archive, target)
    message = str(err.value)
    assert str(archive) in message and f"refused member '{BAD_MEMBER[case].format(out=outside)}" in message
    assert snapshot(tmp_path) == before  # nothing inside the target, beside it or outside it


BAD_ZIPS = {
    "absolute": [GOOD, ("/tmp/evil.txt", b"x")],
    "dotdot": [GOOD, ("../outside/evil.txt", b"x")],
    "backslash-dotdot": [GOOD, ("..\\outside\\evil.txt", b"x")],
    "drive": [GOOD, ("C:/evil.txt", b"x")],
    "symlink": [GOOD, zip_symlink("good/passwd")],
}


@pytest.mark.parametrize("case", sorted(BAD_ZIPS))
def test_a_malicious_zip_is_refused_naming_the_member_and_writes_nothing(tmp_path, case):
    archive = zip_archive(tmp_path / f"{case}.zip", BAD_ZIPS[case])
    bad = BAD_ZIPS[case][-1]
    name = bad.filename if isinstance(bad, zipfile.ZipInfo) else bad[0]
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeArchiveError) as err:
        unpack(archive, tmp_path / "data" / "target")
    assert str(archive) in str(err.value) and f"refused member '{name}'" in str(err.value)
    assert snapshot(tmp_path) == before


def test_links_that_stay_inside_are_unpacked(tmp_path):
    archive = tar_archive(tmp_path / "ok.tar.gz", [
        ("d/file.txt", b"content"),
        tar_entry("d/alias.txt", tarfile.SYMTYPE, "file.txt"),
        tar_entry("d/sub", tarfile.DIRTYPE),
        tar_entry("d/sub/up.txt", tarfile.SYMTYPE, "../file.txt"),
        tar_entry("top", tarfile.SYMTYPE, "d"),
        tar_entry("d/hard.txt", tarfile.LNKTYPE, "d/file.txt"),
    ])
    target = tmp_path / "target"
    assert unpack(archive, target) == 6
    assert (target / "d" / "alias.txt").read_bytes() == b"content"
    assert (target / "d" / "sub" / "up.txt").read_bytes() == b"content"
    assert (target / "top" / "file.txt").read_bytes() == b"content"
    assert os.stat(target / "d" / "hard.txt").st_ino == os.stat(target / "d" / "file.txt").st_ino
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~umask  # not the temp folder's private 0700


@pytest.mark.parametrize(("suffix", "mode"), [(".tar", "w"), (".tgz", "w:gz"), (".tar.bz2", "w:bz2"),
                                             (".tar.xz", "w:xz"), (".download", "w:gz")])
def test_every_tar_flavour_unpacks(tmp_path, suffix, mode):
    archive = tmp_path / f"a{suffix}"  # ".download": recognised by its content
    with tarfile.open(archive, mode) as tf:
        info = tarfile.TarInfo("d/x.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"1"))
    unpack(archive, tmp_path / "target")
    assert (tmp_path / "target" / "d" / "x.txt").read_bytes() == b"1"


def test_not_an_archive_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(HarnessError, match="not a zip or tar archive"):
        unpack(tmp_path / "notes.txt", tmp_path / "target")
    assert not (tmp_path / "target").exists()


def test_unpacking_again_merges_and_replaces_files(tmp_path):
    target = tmp_path / "target"
    unpack(tar_archive(tmp_path / "a.tar", [("images/x.txt", b"1")]), target)
    unpack(zip_archive(tmp_path / "b.zip", [("annotations/y.txt", b"2"), ("images/x.txt", b"3")]), target)
    assert (target / "images" / "x.txt").read_bytes() == b"3"
    assert (target / "annotations" / "y.txt").read_bytes() == b"2"
    clash = zip_archive(tmp_path / "c.zip", [("images/x.txt/z", b"4")])
    with pytest.raises(HarnessError, match="would replace a file by a folder"):
        unpack(clash, target)
    assert (target / "images" / "x.txt").read_bytes() == b"3"


def test_destination_rule():
    root = Path("/data/VOCdevkit/VOC2012")

    def names(*paths: str) -> list:
        return [type("M", (), {"name": p, "kind": "file"})() for p in paths]

    assert destination("VOCdevkit/VOC2012", root, names("VOCdevkit/VOC2012/JPEGImages/a.jpg")) == Path("/data")
    assert destination("VOCdevkit/VOC2012", root, names("VOC2012/JPEGImages/a.jpg")) == Path("/data/VOCdevkit")
    assert destination("food-101", Path("/data/food-101"), names("food-101/images/a.jpg")) == Path("/data")
    assert destination("caltech-101", Path("/data/caltech-101"),
                       names("101_ObjectCategories/a/1.jpg")) == Path("/data/caltech-101")
    assert destination("caltech-101", Path("/data/caltech-101"), names("caltech-101")) == Path("/data/caltech-101")
    assert destination("coco-stuff", Path("/data/coco-stuff"), names("train2017/1.jpg"),
                       into="images") == Path("/data/coco-stuff/images")
    with pytest.raises(HarnessError, match="subfolder"):
        destination("coco-stuff", Path("/data/coco-stuff"), names("a"), into="../x")


# -- a real dataset, through the CLI ----------------------------------------------------------------

@pytest.fixture
def caltech_archives(tmp_path) -> tuple[Path, Path, Path]:
    """The generated mini_coop tree in Caltech-101's layout, packed as its downloads are: the image folder as
    a tar.gz, the split file as a zip, and (for the other placement rule) the whole `caltech-101/` folder."""
    from tasks.fsc import mini

    src = tmp_path / "src"
    mini.generate(src / "mini")
    split = json.loads((src / "mini" / mini.SPLIT_FILE).read_text())
    split = {k: v[:3] for k, v in split.items()}  # a few images keep it quick
    images = tmp_path / "101_ObjectCategories.tar.gz"
    with tarfile.open(images, "w:gz") as tf:
        for rel in sorted({item[0] for items in split.values() for item in items}):
            tf.add(src / "mini" / mini.IMAGE_DIR / rel, f"101_ObjectCategories/{rel}")
    split_zip = zip_archive(tmp_path / "split.zip", [("split_zhou_Caltech101.json", json.dumps(split).encode())])
    whole = tmp_path / "caltech-101.tar.gz"
    with tarfile.open(whole, "w:gz") as tf:
        for rel in sorted({item[0] for items in split.values() for item in items}):
            tf.add(src / "mini" / mini.IMAGE_DIR / rel, f"caltech-101/101_ObjectCategories/{rel}")
        data = json.dumps(split).encode()
        info = tarfile.TarInfo("caltech-101/split_zhou_Caltech101.json")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return images, split_zip, whole


def test_cli_unpacks_downloads_in_place_then_verifies(tmp_path, caltech_archives):
    images, split_zip, _ = caltech_archives
    runner = CliRunner()
    first = runner.invoke(app, ["data", "prepare", "caltech101", "--archive", str(images)])
    assert first.exit_code == 1, first.output
    assert "not complete yet" in first.output and "split_zhou_Caltech101.json" in first.output
    root = tmp_path / "data" / "caltech-101"
    assert (root / "101_ObjectCategories").is_dir()
    second = runner.invoke(app, ["data", "prepare", "caltech101", "--archive", str(split_zip)])
    assert second.exit_code == 0, second.output
    assert f"ok: caltech101 at {root}" in second.output.replace("\n", "")
    assert sorted(p.name for p in root.iterdir()) == ["101_ObjectCategories", "split_zhou_Caltech101.json"]


def test_cli_unpacks_an_archive_holding_the_dataset_folder_into_harness_data(tmp_path, caltech_archives):
    *_, whole = caltech_archives
    result = CliRunner().invoke(app, ["data", "prepare", "caltech101", "--archive", str(whole)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["caltech-101"]


def test_cli_refuses_a_malicious_archive_in_one_line(tmp_path):
    archive = tar_archive(tmp_path / "evil.tar.gz", [GOOD, ("../../evil.txt", b"x")])
    proc = subprocess.run([sys.executable, "-m", "harness", "data", "prepare", "caltech101", "--archive", str(archive)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "evil.tar.gz" in proc.stderr and "../../evil.txt" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path.parent / "evil.txt").exists()


def test_embedded_datasets_take_no_archive(tmp_path):
    archive = zip_archive(tmp_path / "x.zip", [GOOD])
    result = CliRunner().invoke(app, ["data", "prepare", "mini_coop", "--archive", str(archive)])
    assert isinstance(result.exception, HarnessError) and "nothing to unpack" in str(result.exception)


def test_unpack_for_dataset_names_where_it_went(tmp_path):
    archive = zip_archive(tmp_path / "food.zip", [("food-101/images/a.jpg", b"x")])
    dest, n = unpack_for_dataset("food-101", tmp_path / "data" / "food-101", archive)
    assert dest == tmp_path / "data" and n == 1 and (dest / "food-101" / "images" / "a.jpg").is_file()
