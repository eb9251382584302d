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
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.data import archives
from harness.data.archives import (
    ArchiveTooLargeError,
    Member,
    UnsafeArchiveError,
    check_size,
    destination,
    unpack,
    unpack_for_dataset,
)
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
    "dotdot-inside": lambda out: [GOOD, ("good/../good/b.txt", b"x")],  # stays inside, still refused
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
              "dotdot-inside": "good/../good/b.txt",
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
    "dotdot-inside": [GOOD, ("good/../good/b.txt", b"x")],
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
    assert dest == tmp_path / "data" / "food-101" and n == 1 and (dest / "images" / "a.jpg").is_file()


# -- confined to the dataset's own folder (issue 16, point 4) ---------------------------------------

def one_line_refusal(err: pytest.ExceptionInfo, archive: Path, member: str) -> None:
    message = str(err.value)
    assert "\n" not in message and str(archive) in message and f"refused member '{member}'" in message


@pytest.fixture
def data_with_a_sibling(tmp_path) -> Path:
    """$HARNESS_DATA holding another dataset, which an archive for caltech-101 must not reach."""
    data = tmp_path / "data"
    (data / "food-101").mkdir(parents=True)
    (data / "food-101" / "keep.txt").write_text("food")
    return data


ESCAPES = {  # member lists of archives for caltech-101, and the member each must be refused for
    "sibling-via-dotdot": ([("caltech-101/a.txt", b"ok"), ("caltech-101/../food-101/MARK", b"x")],
                           "caltech-101/../food-101/MARK"),
    "parent-via-dotdot": ([("caltech-101/a.txt", b"ok"), ("caltech-101/../MARK", b"x")], "caltech-101/../MARK"),
    "dotdot-first": ([("caltech-101/a.txt", b"ok"), ("../food-101/MARK", b"x")], "../food-101/MARK"),
    "symlink-to-sibling": ([("caltech-101/a.txt", b"ok"),
                            tar_entry("caltech-101/food", tarfile.SYMTYPE, "../food-101")], "caltech-101/food"),
    "symlink-to-parent": ([("caltech-101/a.txt", b"ok"),
                           tar_entry("caltech-101/up", tarfile.SYMTYPE, "..")], "caltech-101/up"),
    "hardlink-to-sibling": ([("caltech-101/a.txt", b"ok"),
                             tar_entry("caltech-101/h", tarfile.LNKTYPE, "food-101/keep.txt")], "caltech-101/h"),
    "hardlink-dotdot": ([("caltech-101/a.txt", b"ok"),
                         tar_entry("caltech-101/h", tarfile.LNKTYPE, "caltech-101/../food-101/keep.txt")],
                        "caltech-101/h"),
    "device": ([("caltech-101/a.txt", b"ok"), tar_entry("caltech-101/sda", tarfile.CHRTYPE)], "caltech-101/sda"),
}


@pytest.mark.parametrize(("case", "fmt"), [(case, fmt) for case in sorted(ESCAPES) for fmt in ("tar", "zip")
                                           if fmt == "tar" or all(isinstance(m, tuple) for m in ESCAPES[case][0])])
def test_an_archive_for_one_dataset_cannot_reach_another(tmp_path, data_with_a_sibling, case, fmt):
    members, bad = ESCAPES[case]  # links and devices only as tar members (zip symlinks: the zip cases above)
    archive = (tar_archive(tmp_path / f"{case}.tar.gz", members) if fmt == "tar"
               else zip_archive(tmp_path / f"{case}.zip", members))
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeArchiveError) as err:
        unpack_for_dataset("caltech-101", data_with_a_sibling / "caltech-101", archive)
    one_line_refusal(err, archive, bad)
    assert snapshot(tmp_path) == before  # no MARK anywhere, no caltech-101/a.txt, no temp folder
    assert (data_with_a_sibling / "food-101" / "keep.txt").read_text() == "food"


def test_the_issue_case_through_the_cli_is_one_line_and_writes_nothing(tmp_path, data_with_a_sibling):
    archive = tar_archive(tmp_path / "sibling.tar", [("caltech-101/a.txt", b"ok"),
                                                     ("caltech-101/../food-101/MARK", b"x"),
                                                     ("caltech-101/../MARK", b"x")])
    before = snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "harness", "data", "prepare", "caltech101", "--archive", str(archive)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "sibling.tar" in lines[0] and "caltech-101/../food-101/MARK" in lines[0], lines
    assert snapshot(tmp_path) == before


VOC_ESCAPES = {  # VOC2012's archive brings `VOCdevkit/`: only `VOCdevkit/VOC2012/` is the dataset's folder
    "other-year": ("VOCdevkit/VOC2010/MARK", "lands outside the dataset folder 'VOCdevkit/VOC2012'"),
    "file-on-the-way": ("VOCdevkit/MARK", "lands outside the dataset folder 'VOCdevkit/VOC2012'"),
    "replaces-the-folder": ("VOCdevkit/VOC2012", "would replace the dataset folder 'VOCdevkit/VOC2012'"),
}


@pytest.mark.parametrize("case", sorted(VOC_ESCAPES))
def test_a_member_beside_a_nested_dataset_folder_is_refused(tmp_path, case):
    bad, why = VOC_ESCAPES[case]
    members = [("VOCdevkit/VOC2012/JPEGImages/a.jpg", b"ok"), (bad, b"x")]
    if case == "replaces-the-folder":
        members = [(bad, b"x"), tar_entry("VOCdevkit/README", tarfile.DIRTYPE)]
    archive = tar_archive(tmp_path / f"{case}.tar", members)
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeArchiveError, match=why) as err:
        unpack_for_dataset("VOCdevkit/VOC2012", tmp_path / "data" / "VOCdevkit" / "VOC2012", archive)
    one_line_refusal(err, archive, bad)
    assert snapshot(tmp_path) == before


def test_folders_on_the_way_to_a_nested_dataset_folder_are_fine(tmp_path):
    data = tmp_path / "data"
    (data / "VOCdevkit" / "VOC2010").mkdir(parents=True)
    (data / "VOCdevkit" / "VOC2010" / "keep.txt").write_text("2010")
    archive = tar_archive(tmp_path / "VOCtrainval_11-May-2012.tar", [
        tar_entry("VOCdevkit", tarfile.DIRTYPE), tar_entry("VOCdevkit/VOC2012", tarfile.DIRTYPE),
        ("VOCdevkit/VOC2012/JPEGImages/a.jpg", b"jpeg"),
        tar_entry("VOCdevkit/VOC2012/latest.jpg", tarfile.SYMTYPE, "JPEGImages/a.jpg")])
    dest, n = unpack_for_dataset("VOCdevkit/VOC2012", data / "VOCdevkit" / "VOC2012", archive)
    assert (dest, n) == (data / "VOCdevkit" / "VOC2012", 4)
    assert (dest / "latest.jpg").read_bytes() == b"jpeg"
    assert sorted(p.name for p in (data / "VOCdevkit").iterdir()) == ["VOC2010", "VOC2012"]  # no temp folder
    assert (data / "VOCdevkit" / "VOC2010" / "keep.txt").read_text() == "2010"


# -- the unpacked size is capped ----------------------------------------------------------------------

def kb_tar(path: Path, n: int = 3) -> Path:
    return tar_archive(path, [(f"caltech-101/{i}.bin", bytes(1000)) for i in range(n)])


def test_an_archive_declaring_more_than_the_limit_is_refused_in_one_line(tmp_path):
    archive = kb_tar(tmp_path / "big.tar.gz")  # 3 x 1000 bytes declared
    before = snapshot(tmp_path)
    with pytest.raises(ArchiveTooLargeError) as err:
        unpack_for_dataset("caltech-101", tmp_path / "data" / "caltech-101", archive, max_unpacked_gb=2e-6)
    message = str(err.value)
    assert "\n" not in message and str(archive) in message
    assert "declare 3.0 kB unpacked, over the 2.0 kB limit" in message and "--max-unpacked-gb 1" in message
    assert snapshot(tmp_path) == before
    # exactly at the limit is within it
    dest, n = unpack_for_dataset("caltech-101", tmp_path / "data" / "caltech-101", archive, max_unpacked_gb=3e-6)
    assert n == 3 and sorted(p.name for p in dest.iterdir()) == ["0.bin", "1.bin", "2.bin"]


def test_the_cli_takes_the_limit_as_an_option(tmp_path):
    archive = kb_tar(tmp_path / "big.tar.gz")
    runner = CliRunner()
    refused = runner.invoke(app, ["data", "prepare", "caltech101", "--archive", str(archive),
                                  "--max-unpacked-gb", "0.000002"])
    assert isinstance(refused.exception, ArchiveTooLargeError), refused.output
    assert not (tmp_path / "data").exists()
    allowed = runner.invoke(app, ["data", "prepare", "caltech101", "--archive", str(archive),
                                  "--max-unpacked-gb", "0.000003"])
    assert "not complete yet" in allowed.output  # unpacked (the split file is still missing)
    assert (tmp_path / "data" / "caltech-101" / "2.bin").stat().st_size == 1000


def test_the_default_limit_is_200_gb():
    over = [Member("a.bin", "file", size=150 * 10**9), Member("b.bin", "file", size=51 * 10**9)]
    with pytest.raises(ArchiveTooLargeError, match=r"declare 201\.0 GB unpacked, over the 200\.0 GB limit.*"
                                                   r"--max-unpacked-gb 201"):
        check_size(Path("x.tar"), over, Path("/"))


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_a_nonsense_limit_is_named(bad):
    with pytest.raises(HarnessError, match="--max-unpacked-gb must be a positive number"):
        check_size(Path("x.tar"), [Member("a", "file", size=1)], Path("/"), bad)


def test_an_archive_that_does_not_fit_the_free_disk_is_refused(tmp_path, monkeypatch):
    archive = kb_tar(tmp_path / "big.tar.gz")
    need = archives._DISK_SPARE + 3 * 4096  # the spare plus three 1000-byte files, a 4 kB block each
    monkeypatch.setattr(archives.shutil, "disk_usage", lambda path: SimpleNamespace(free=need - 1))
    before = snapshot(tmp_path)
    with pytest.raises(ArchiveTooLargeError, match=r"only .* is free at .*free some space") as err:
        unpack_for_dataset("caltech-101", tmp_path / "data" / "caltech-101", archive)
    assert "\n" not in str(err.value) and str(archive) in str(err.value)
    assert snapshot(tmp_path) == before
    monkeypatch.setattr(archives.shutil, "disk_usage", lambda path: SimpleNamespace(free=need))
    assert unpack_for_dataset("caltech-101", tmp_path / "data" / "caltech-101", archive)[1] == 3


def lie_about_size(path: Path, name: str, declared: int) -> Path:
    """Rewrite the uncompressed size a zip declares for `name` (local header and central directory)."""
    data = bytearray(path.read_bytes())
    for sig, size_at, name_len_at, name_at in ((b"PK\x03\x04", 22, 26, 30), (b"PK\x01\x02", 24, 28, 46)):
        at = data.find(sig)
        while at != -1:
            n = int.from_bytes(data[at + name_len_at:at + name_len_at + 2], "little")
            if bytes(data[at + name_at:at + name_at + n]) == name.encode():
                data[at + size_at:at + size_at + 4] = declared.to_bytes(4, "little")
            at = data.find(sig, at + 1)
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo(name).file_size == declared
    return path


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_a_zip_member_holding_more_than_its_header_declares_is_refused(tmp_path, compression):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression) as zf:
        zf.writestr("caltech-101/a.txt", b"ok")
        zf.writestr("caltech-101/blob.bin", bytes(4 * 2**20))  # 4 MiB of zeros: ~4 kB deflated
    lie_about_size(archive, "caltech-101/blob.bin", 100)
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeArchiveError, match="holds more than the 100 bytes its header declares") as err:
        unpack_for_dataset("caltech-101", tmp_path / "data" / "caltech-101", archive)
    one_line_refusal(err, archive, "caltech-101/blob.bin")
    assert snapshot(tmp_path) == before  # the partial blob, its temp folder and $HARNESS_DATA itself: gone


def test_a_zip_member_holding_less_than_its_header_declares_is_named(tmp_path):
    archive = zip_archive(tmp_path / "short.zip", [("a.txt", b"ok"), ("b.bin", bytes(1000))])
    lie_about_size(archive, "b.bin", 5000)
    with pytest.raises(HarnessError, match="member 'b.bin' holds 1000 bytes but its header declares 5000"):
        unpack(archive, tmp_path / "target")
    assert not (tmp_path / "target").exists()
