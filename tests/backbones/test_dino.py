"""The timm DINO / DINOv2 backbone: the backbone contract (timm's own save/load round trips...), preprocessing,
hub loads, dense shapes at several sizes, cards."""

from __future__ import annotations

import functools

import pytest
import timm
import torch
from backbone_helpers import TimmContract, backbone_cfg, load_hub_weights, offline_hub, save_timm, timm_global
from backbone_helpers import random_images as images

from backbones.cards import DINO
from backbones.dino import DINOBackbone, dense_block_indices
from harness.errors import HarnessError, WeightsMissingError

TINY = DINO["tiny"]

cfg = functools.partial(backbone_cfg, "dino")


def direct_tiny(seed: int, **kw) -> torch.nn.Module:
    """The tiny model made by timm directly (plain fixed-size ViT unless `dynamic_img_size=True` is passed)."""
    torch.manual_seed(seed)
    return timm.create_model(TINY.arch, pretrained=False, num_classes=0,
                             pretrained_cfg_overlay=TINY.extra["pretrained_cfg_overlay"],
                             **TINY.extra["model_kwargs"], **kw).eval()


class TestContract(TimmContract):
    backbone = DINOBackbone
    direct_tiny = staticmethod(direct_tiny)
    other_architecture = staticmethod(lambda: timm.create_model(
        "vit_base_patch16_224.dino", pretrained=False, num_classes=0, embed_dim=32, depth=1, num_heads=2).state_dict())


def test_default_variant():
    assert DINOBackbone.default_variant == "vit-b-16" and DINO["vit-b-16"].arch == "vit_base_patch16_224.dino"


def test_preprocess_is_timms_eval_transform(tmp_path):
    """timm's own eval transform for the model's data config, also when the weights come with timm's
    config.json (grey images converted to RGB first)."""
    model = direct_tiny(seed=0)
    expected = timm.data.create_transform(**timm.data.resolve_model_data_config(model), is_training=False)
    ims = images() + [images(1)[0].convert("L")]
    want = torch.stack([expected(im.convert("RGB")) for im in ims])
    for bb in (DINOBackbone(cfg()), DINOBackbone(cfg(weights=str(save_timm(model, tmp_path / "w"))))):
        torch.testing.assert_close(bb.preprocess(ims), want, atol=0, rtol=0)


def test_hub_cache_round_trip(tmp_path, monkeypatch):
    model = direct_tiny(seed=5)
    bb = load_hub_weights(DINOBackbone, cfg, monkeypatch, tmp_path / "hub", "org/tiny-dino",
                          {"model.safetensors": model.state_dict()})
    x = bb.preprocess(images())
    torch.testing.assert_close(bb.image_features(x).global_, timm_global(model, x), atol=1e-5, rtol=0)


def test_dense_shapes_at_two_resolutions_and_non_square(tmp_path):
    model = direct_tiny(seed=3)
    bb = DINOBackbone(cfg(weights=str(save_timm(model, tmp_path / "w"))))
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
        torch.testing.assert_close(feats.global_, timm_global(dynamic, xi), atol=1e-5, rtol=0)
    with pytest.raises(HarnessError, match="multiple of the patch size"):
        bb.image_features(torch.randn(1, 3, 50, 64), kinds=("dense",))


def test_missing_hub_weights_offline_names_id_and_command(tmp_path, monkeypatch):
    offline_hub(monkeypatch, tmp_path / "hub")
    for variant, repo in (("vit-b-16", "timm/vit_base_patch16_224.dino"),
                          ("dinov2-s", "timm/vit_small_patch14_dinov2.lvd142m")):
        with pytest.raises(WeightsMissingError) as err:
            DINOBackbone(cfg(variant=variant))
        assert repo in str(err.value) and f"hf download {repo}" in str(err.value)
    with pytest.raises(WeightsMissingError, match="hf download timm/vit_base_patch16_224.dino"):
        DINOBackbone.weights_fingerprint(cfg(variant=None))


def test_fingerprint_keys():
    fp = DINOBackbone(cfg()).fingerprint()
    assert fp["input_size"] == [3, 64, 64] and fp["model_kwargs"] == TINY.extra["model_kwargs"]


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

