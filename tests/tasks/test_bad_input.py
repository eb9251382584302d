"""Bad input gets a clear error naming the file, or the field's standard handling — never a traceback."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.data.images import open_rgb
from harness.errors import DataMissingError
from tasks.fsc.datasets import DTD, MiniCoOp
from tasks.ovss.datasets import SegmentationDataset


def _save(im: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kw)
    return path


# -- image modes are converted to 8-bit RGB as the field does ------------------------------------------


@pytest.mark.parametrize("mode, fmt", [("L", "png"), ("1", "png"), ("LA", "png"), ("P", "png"), ("RGBA", "png"),
                                       ("CMYK", "jpeg"), ("CMYK", "tiff"), ("I", "tiff")])
def test_modes_become_rgb(tmp_path, mode, fmt):
    im = Image.new(mode, (5, 3))
    path = _save(im, tmp_path / f"x.{fmt}")
    out = open_rgb(path)
    assert out.mode == "RGB" and out.size == (5, 3)


def test_rgba_drops_alpha_and_palette_transparency_is_handled(tmp_path):
    rgba = _save(Image.new("RGBA", (2, 2), (10, 20, 30, 0)), tmp_path / "a.png")
    assert open_rgb(rgba).getpixel((0, 0)) == (10, 20, 30)
    pal = Image.new("P", (2, 2), 1)
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    path = _save(pal, tmp_path / "p.png", transparency=0)
    assert open_rgb(path).getpixel((0, 0)) == (200, 100, 50)


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 65535, 1000]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "depth16.png")
    with Image.open(path) as im:
        assert im.mode in ("I;16", "I")  # Pillow's name for 16-bit grayscale PNG
    out = np.asarray(open_rgb(path))
    assert out[0, :, 0].tolist() == [0, 100, 255, 4]  # round(v / 257): 1000 → 4, not clipped to 255
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_cmyk_jpeg_matches_pillow_conversion(tmp_path):
    path = _save(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", quality=100)
    with Image.open(path) as im:
        expected = im.convert("RGB").getpixel((1, 1))
    assert open_rgb(path).getpixel((1, 1)) == expected


# -- unusable files raise DataMissingError naming the file ------------------------------------------------


def _png_bytes(size=(32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("name, data, why", [
    ("empty.jpg", b"", "empty file"),
    ("text.jpg", b"this is not an image\n" * 10, "not an image"),
    ("trunc.png", _png_bytes()[:200], "truncated"),
    ("zero.png", _png_bytes()[:16] + bytes(8) + _png_bytes()[24:], "not an image|corrupt|zero-size"),  # 0x0 IHDR
])
def test_bad_files_are_named(tmp_path, name, data, why):
    path = tmp_path / "imgs" / name
    path.parent.mkdir()
    path.write_bytes(data)
    with pytest.raises(DataMissingError, match=why) as err:
        open_rgb(path, "somedata")
    assert str(path) in str(err.value) and "somedata" in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataMissingError) as err:
        open_rgb(tmp_path / "nope.jpg")
    assert str(tmp_path / "nope.jpg") in str(err.value)


# -- the readers use it --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "mini_coop"
    MiniCoOp.generate(root)
    return root


def test_classification_reader_names_a_truncated_image(mini_root, tmp_path):
    root = Path(shutil.copytree(mini_root, tmp_path / "mini_coop"))
    ds = MiniCoOp(root)
    item = ds.splits()["test"][3]
    path = ds.image_path(item)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(DataMissingError, match="truncated") as err:
        ds.load_image(item)
    assert str(path) in str(err.value) and "mini_coop" in str(err.value)
    gray = ds.splits()["test"][4]
    Image.new("L", (8, 8), 77).save(ds.image_path(gray), format="JPEG")
    assert ds.load_image(gray).mode == "RGB"


def test_segmentation_reader_names_a_bad_image_and_label(tmp_path):
    from tasks.ovss.datasets import PascalVOC20

    root = tmp_path / PascalVOC20.folder
    ds = PascalVOC20(root)
    (root / ds.image_dir).mkdir(parents=True)
    (root / ds.label_dir).mkdir(parents=True)
    Image.new("RGB", (6, 4)).save(root / ds.image_dir / "a.jpg")
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(root / ds.label_dir / f"a{ds.label_ext}")
    (root / ds.image_dir / "b.jpg").write_bytes(b"GIF89a broken")
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(root / ds.label_dir / f"b{ds.label_ext}")
    ds = PascalVOC20(root)
    with pytest.raises(DataMissingError) as err:
        ds.verify()
    assert "b.jpg" in str(err.value)
    bad = next(it for it in ds.items() if it.image.name == "b.jpg")
    with pytest.raises(DataMissingError) as err:
        ds.load_image(bad)
    assert str(bad.image) in str(err.value)
    (root / ds.label_dir / f"a{ds.label_ext}").write_bytes(b"not a png")
    good = next(it for it in ds.items() if it.image.name == "a.jpg")
    with pytest.raises(DataMissingError, match="label map") as err:
        ds.load_label(good)
    assert str(good.label) in str(err.value)
    assert issubclass(PascalVOC20, SegmentationDataset)


# -- split files --------------------------------------------------------------------------------------


@pytest.mark.parametrize("split, why", [
    ({"train": [["a/1.jpg", 0, "cat"], ["b/1.jpg", 1, "cat"]], "val": [], "test": []}, "disagree"),  # duplicate
    ({"train": [["a/1.jpg", 0, "cat"]], "val": [], "test": [["b/2.jpg", 1, "dog"]]}, "not in train"),  # unknown
    ({"train": [["a/1.jpg", 0, "cat"]], "val": [], "test": [["a/1.jpg", 0, "cow"]]}, "disagree"),
])
def test_duplicate_or_unknown_class_names_in_split_files(tmp_path, split, why):
    root = tmp_path / "dtd"
    (root / "images").mkdir(parents=True)
    (root / DTD.split_file).write_text(json.dumps(split))
    with pytest.raises(DataMissingError, match=why) as err:
        DTD(root).splits()
    assert str(root / DTD.split_file) in str(err.value)


def _harness(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_run_stops_before_any_work_when_a_listed_image_is_missing(tmp_path):
    data = tmp_path / "data" / "mini_coop"
    MiniCoOp.generate(data)
    ds = MiniCoOp(data)
    victim = ds.image_path(ds.splits()["test"][-1])
    victim.unlink()
    suite = tmp_path / "one.yaml"
    suite.write_text("name: one\nvariant: tiny\ndevice: cpu\nentries:\n  - task: fsc\n    datasets: [mini_coop]\n"
                     "    grid: {head: [linear-probe], shots: [1], seed: [1]}\n")
    proc = _harness("run", "-b", "resnet", "--suite", str(suite), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and str(victim) in proc.stderr.replace("\n", "")
    assert not (tmp_path / "home" / "records").exists()
    assert not list((tmp_path / "cache").rglob("*.safetensors"))


@pytest.mark.parametrize("text", ["name: bad\nentries: [\n", "name: bad\n\tentries: []\n", "- just\n- a list\n",
                                  "name: bad\nentries:\n  - task: fsc\n    datasets: mini_coop: x\n"])
def test_malformed_yaml_suite_is_one_line(tmp_path, text):
    suite = tmp_path / "bad.yaml"
    suite.write_text(text)
    proc = _harness("run", "-b", "resnet", "--suite", str(suite), "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr and len(lines) == 1 and "bad.yaml" in lines[0], proc.stderr


# -- fuzz: random damage to real image bytes and split files never escapes as a traceback -------------


def test_fuzzed_images_and_split_files_give_rgb_or_a_named_error(tmp_path):
    rng = np.random.default_rng(1234)
    seeds = {}
    for fmt, mode in (("PNG", "RGB"), ("JPEG", "L"), ("GIF", "P"), ("TIFF", "CMYK"), ("BMP", "RGB"), ("PNG", "I;16")):
        arr = rng.integers(0, 255, (9, 7), dtype=np.uint8)
        im = Image.fromarray(arr.astype(np.uint16) * 200) if mode == "I;16" else Image.fromarray(arr).convert(mode)
        buf = io.BytesIO()
        im.save(buf, fmt)
        seeds[f"{fmt}-{mode}"] = buf.getvalue()
    tried = ok = 0
    path = tmp_path / "fuzz.img"
    for i in range(1200):
        data = bytearray(seeds[list(seeds)[i % len(seeds)]])
        kind = rng.integers(0, 3)
        if kind == 0:
            data = data[: rng.integers(0, len(data))]
        elif kind == 1:
            for _ in range(rng.integers(1, 8)):
                data[rng.integers(0, len(data))] = rng.integers(0, 256)
        else:
            at = rng.integers(0, len(data))
            data[at:at] = rng.bytes(int(rng.integers(1, 64)))
        path.write_bytes(bytes(data))
        tried += 1
        try:
            out = open_rgb(path, "fuzz")
        except DataMissingError as exc:
            assert str(path) in str(exc)
            continue
        assert out.mode == "RGB" and out.width > 0 and out.height > 0
        ok += 1
    assert tried == 1200 and 0 < ok < tried

    root = tmp_path / "dtd"
    (root / "images").mkdir(parents=True)
    atoms = [0, 1, -1, 2.5, "", "a/1.jpg", "/abs.jpg", "../x.jpg", "cat", "dog", None, True, [], {}]
    for _ in range(300):
        split = {s: [[atoms[j] for j in rng.integers(0, len(atoms), rng.integers(0, 4))]
                     for _ in range(rng.integers(0, 4))] for s in ("train", "val", "test")}
        if rng.random() < 0.2:
            del split["val"]
        (root / DTD.split_file).write_text(json.dumps(split))
        try:
            DTD(root).splits()
        except DataMissingError as exc:
            assert str(root / DTD.split_file) in str(exc)
