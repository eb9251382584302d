"""`harness.data.weights.resolve_model_folder`: a whole model folder, local or a hub id's cached snapshot, offline."""

from __future__ import annotations

import shutil

import pytest
import torch
from vermouth_helpers import images, tiny_cfg

from backbones.vermouth.backbone import VermouthBackbone
from backbones.vermouth.components import SD_INCLUDE, SD_REQUIRED
from harness.data.weights import resolve_model_folder
from harness.errors import WeightsMissingError

REV = "0123456789abcdef0123456789abcdef01234567"


def fake_hub(tmp_path, folder, repo="org/tiny-sd"):
    org, name = repo.split("/")
    root = tmp_path / "hub" / f"models--{org}--{name}"
    shutil.copytree(folder, root / "snapshots" / REV)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(REV)
    return tmp_path / "hub"


def test_hub_snapshot_loads_like_the_folder(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(fake_hub(tmp_path, tiny_folder)))
    hub = VermouthBackbone(tiny_cfg(weights="org/tiny-sd"))
    assert hub.weights.kind == "hub" and hub.weights.fingerprint == f"org/tiny-sd@{REV}"
    assert VermouthBackbone.weights_fingerprint(tiny_cfg(weights="org/tiny-sd")) == f"org/tiny-sd@{REV}"
    local = VermouthBackbone(tiny_cfg(weights=str(tiny_folder)))
    x = local.preprocess(images(2))
    torch.testing.assert_close(hub.image_features(x).global_, local.image_features(x).global_, atol=0, rtol=0)


def test_local_folder_fingerprint_follows_its_files(tiny_folder, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_folder, copy)
    a = resolve_model_folder(str(copy), required=SD_REQUIRED, include=SD_INCLUDE)
    assert a.kind == "file" and a.path == copy
    assert a.fingerprint == resolve_model_folder(str(tiny_folder), required=SD_REQUIRED, include=SD_INCLUDE).fingerprint
    (copy / "README.md").write_text("not a model file")  # outside `include`: same identity
    assert resolve_model_folder(str(copy), required=SD_REQUIRED, include=SD_INCLUDE).fingerprint == a.fingerprint
    cfg = copy / "scheduler" / "scheduler_config.json"
    cfg.write_text(cfg.read_text().replace("0.012", "0.0125"))
    assert resolve_model_folder(str(copy), required=SD_REQUIRED, include=SD_INCLUDE).fingerprint != a.fingerprint
    assert resolve_model_folder("random", seed=3).fingerprint == "random(seed=3,init=v2)"


def test_incomplete_snapshot_and_bad_paths_are_named(tiny_folder, tmp_path, monkeypatch):
    hub = fake_hub(tmp_path, tiny_folder)
    (hub / "models--org--tiny-sd" / "snapshots" / REV / "unet" / "config.json").unlink()
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    with pytest.raises(WeightsMissingError, match="unet/config.json") as err:
        resolve_model_folder("org/tiny-sd", required=SD_REQUIRED)
    assert "hf download org/tiny-sd" in str(err.value) and "HF_HUB_OFFLINE" in str(err.value)
    with pytest.raises(WeightsMissingError, match="does not exist"):
        resolve_model_folder(str(tmp_path / "nowhere"))
    with pytest.raises(WeightsMissingError, match="not a directory"):
        resolve_model_folder(str(tiny_folder / "model_index.json"))
