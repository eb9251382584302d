"""The timm DINO / DINOv2 backbone: timm's own save/load round trips, dense shapes at several sizes, cards."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from backbones.cards import DINO
from backbones.dino import DINOBackbone, dense_block_indices
from harness.catalog import BACKBONES
from harness.errors import HarnessError, WeightsMissingError

REV = "76543210fedcba9876543210fedcba9876543210"
TINY = DINO["tiny"]


def cfg(**kw):
    """A stand-in for harness.config.BackboneConfig."""
    base = dict(name="dino", variant="tiny", weights=None, device="cpu", dtype="fp32", batch_size=8, seed=0)
    return types.SimpleNamespace(**{**base, **kw})


def images(n: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (70 + 9 * i, 100, 3), dtype=np.uint8)) for i in range(n)]


def direct_tiny(seed: int, **kw) -> torch.nn.Module:
    """The tiny model made by timm directly (plain fixed-size ViT unless `dynamic_img_size=True` is passed)."""
    torch.manual_seed(seed)
    return timm.create_model(TINY.arch, pretrained=False, num_classes=0,
                             pretrained_cfg_overlay=TINY.extra["pretrained_cfg_overlay"],
                             **TINY.extra["model_kwargs"], **kw).eval()


def direct_global(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.forward_head(model.forward_features(x), pre_logits=True)


def fake_hf_cache(cache: Path, repo_id: str, files: dict[str, dict[str, torch.Tensor] | str]) -> Path:
    """The HF hub cache layout: models--org--name/{refs/main, snapshots/<rev>/<file>}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / REV
    snap.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, str):
            (snap / name).write_text(content)
        else:
            save_file(content, str(snap / name))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    return snap


def test_registered_lazily_and_default():
    assert BACKBONES.get("dino") is DINOBackbone
    assert DINOBackbone.default_variant == "vit-b-16" and DINO["vit-b-16"].arch == "vit_base_patch16_224.dino"


def test_same_seed_same_features_other_seed_differs():
    x = DINOBackbone(cfg()).preprocess(images())
    a = DINOBackbone(cfg()).image_features(x).global_
    b = DINOBackbone(cfg()).image_features(x).global_
    c = DINOBackbone(cfg(seed=1)).image_features(x).global_
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("safe", [True, False])
def test_timm_save_for_hf_round_trip(tmp_path, safe):
    model = direct_tiny(seed=123)
    timm.models.save_for_hf(model, tmp_path / "w", safe_serialization=safe)
    bb = DINOBackbone(cfg(weights=str(tmp_path / "w")))
    assert bb.weights.kind == "file" and bb.weights.fingerprint.startswith("sha256:")
    assert bb.weights.path.name == ("model.safetensors" if safe else "pytorch_model.bin")
    x = bb.preprocess(images())
    assert x.shape == (3, 3, 64, 64) and x.dtype == torch.float32  # non-square images come out square
    torch.testing.assert_close(bb.image_features(x).global_, direct_global(model, x), atol=1e-5, rtol=0)
    both = bb.image_features(x, kinds=("global", "dense"))
    torch.testing.assert_close(both.global_, direct_global(model, x), atol=1e-5, rtol=0)
    assert bb.param_count == TINY.extra["params"]
    # timm's own eval transform for the model's data config.
    expected = timm.data.create_transform(**timm.data.resolve_model_data_config(model), is_training=False)
    torch.testing.assert_close(x, torch.stack([expected(im) for im in images()]), atol=0, rtol=0)


def test_hub_cache_round_trip(tmp_path, monkeypatch):
    model = direct_tiny(seed=5)
    fake_hf_cache(tmp_path / "hub", "org/tiny-dino", {"model.safetensors": model.state_dict()})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bb = DINOBackbone(cfg(weights="hf-hub:org/tiny-dino"))
    assert bb.weights.fingerprint == f"org/tiny-dino@{REV}" == bb.fingerprint()["weights"]
    assert DINOBackbone.weights_fingerprint(cfg(weights="org/tiny-dino")) == f"org/tiny-dino@{REV}"
    x = bb.preprocess(images())
    torch.testing.assert_close(bb.image_features(x).global_, direct_global(model, x), atol=1e-5, rtol=0)


def test_dense_shapes_at_two_resolutions_and_non_square(tmp_path):
    model = direct_tiny(seed=3)
    timm.models.save_for_hf(model, tmp_path / "w", safe_serialization=True)
    bb = DINOBackbone(cfg(weights=str(tmp_path / "w")))
    assert bb.dense_levels == TINY.extra["dense_levels"] == ("block1", "block2")
    x = bb.preprocess(images(2))
    dense = bb.image_features(x, kinds=("dense",))
    assert dense.global_ is None
    assert {k: tuple(v.shape) for k, v in dense.dense.items()} == {"block1": (2, 64, 4, 4), "block2": (2, 64, 4, 4)}
    with torch.inference_mode():
        expected = model.forward_intermediates(x, indices=[0, 1], norm=True, output_fmt="NCHW",
                                               intermediates_only=True)
    for got, want in zip(dense.dense.values(), expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)

    # Other sizes: what timm's dynamic-size ViT gives with the same weights (its pos embedding resampled).
    dynamic = direct_tiny(seed=0, dynamic_img_size=True)
    dynamic.load_state_dict(model.state_dict())
    for h, w in ((96, 96), (64, 96), (112, 48)):
        xi = torch.randn(2, 3, h, w)
        feats = bb.image_features(xi, kinds=("global", "dense"))
        assert {tuple(v.shape) for v in feats.dense.values()} == {(2, 64, h // 16, w // 16)}
        torch.testing.assert_close(feats.global_, direct_global(dynamic, xi), atol=1e-5, rtol=0)
    with pytest.raises(HarnessError, match="multiple of the patch size"):
        bb.image_features(torch.randn(1, 3, 50, 64), kinds=("dense",))


def test_missing_hub_weights_offline_names_id_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for variant, repo in (("vit-b-16", "timm/vit_base_patch16_224.dino"),
                          ("dinov2-s", "timm/vit_small_patch14_dinov2.lvd142m")):
        with pytest.raises(WeightsMissingError) as err:
            DINOBackbone(cfg(variant=variant))
        assert repo in str(err.value) and f"hf download {repo}" in str(err.value)
    with pytest.raises(WeightsMissingError, match="hf download timm/vit_base_patch16_224.dino"):
        DINOBackbone.weights_fingerprint(cfg(variant=None))


def test_fingerprint_follows_the_weights(tmp_path):
    for seed in (1, 2):
        timm.models.save_for_hf(direct_tiny(seed), tmp_path / str(seed), safe_serialization=True)
    a = DINOBackbone(cfg(weights=str(tmp_path / "1"))).fingerprint()
    b = DINOBackbone(cfg(weights=str(tmp_path / "2"))).fingerprint()
    r = DINOBackbone(cfg()).fingerprint()
    assert a["weights"] != b["weights"] and r["weights"] == "random(seed=0)"
    assert {k: v for k, v in a.items() if k != "weights"} == {k: v for k, v in b.items() if k != "weights"}
    assert r["input_size"] == [3, 64, 64] and r["model_kwargs"] == TINY.extra["model_kwargs"]
    json.dumps(r)


def test_wrong_architecture_names_the_file(tmp_path):
    path = tmp_path / "vit.safetensors"
    save_file(timm.create_model("vit_base_patch16_224.dino", pretrained=False, num_classes=0, embed_dim=32,
                                depth=1, num_heads=2).state_dict(), str(path))
    with pytest.raises(HarnessError, match=str(path)):
        DINOBackbone(cfg(weights=str(path)))


def test_bf16_autocast_on_cpu_returns_fp32_and_frozen():
    bb = DINOBackbone(cfg(dtype="bf16"))
    out = bb.image_features(bb.preprocess(images(1)), kinds=("global", "dense"))
    assert out.global_.dtype == torch.float32 and out.dense["block2"].dtype == torch.float32
    assert not any(p.requires_grad for p in bb.model.parameters()) and not bb.model.training
    with pytest.raises(HarnessError, match="feature kind"):
        bb.image_features(torch.zeros(1, 3, 64, 64), kinds=("tokens",))


@pytest.mark.parametrize("variant", sorted(DINO))
def test_cards_match_the_architecture(variant):
    """Card facts checked against timm's model, built on the meta device for the big variants."""
    card = DINO[variant]
    if variant == "tiny":
        model = direct_tiny(0)
    else:
        with torch.device("meta"):
            model = timm.create_model(card.arch, pretrained=False, num_classes=0)
        assert card.weights == f"timm/{card.arch}"
    data = timm.data.resolve_model_data_config(model)
    assert card.extra["resolution"] == data["input_size"][1] == data["input_size"][2]
    assert card.extra["params"] == sum(p.numel() for p in model.parameters())
    assert card.extra["embed_dim"] == model.num_features
    assert tuple(card.extra["feature_kinds"]) == DINOBackbone.feature_kinds
    assert card.extra["dense_levels"] == tuple(f"block{i + 1}" for i in dense_block_indices(len(model.blocks)))


def test_dense_block_indices():
    assert dense_block_indices(12) == [2, 5, 8, 11]
    assert dense_block_indices(40) == [9, 19, 29, 39]
    assert dense_block_indices(2) == [0, 1]
