"""The timm ResNet backbone: the backbone contract (seeded init, timm's own save round trip...), feature shapes,
hub loads, cards."""

from __future__ import annotations

import functools

import pytest
import timm
import torch
from backbone_helpers import TimmContract, backbone_cfg, load_hub_weights, random_images, timm_global

from backbones.resnet import ResNetBackbone

TINY_OVERLAY = {"input_size": (3, 64, 64)}

cfg = functools.partial(backbone_cfg, "resnet")
images = functools.partial(random_images, size=(160, 130), step=7)


def direct_tiny(seed: int) -> torch.nn.Module:
    """The tiny model made by timm directly, with its classifier (the harness must drop `fc.*`)."""
    torch.manual_seed(seed)
    return timm.create_model("resnet10t", pretrained=False, pretrained_cfg_overlay=TINY_OVERLAY).eval()


class TestContract(TimmContract):
    backbone = ResNetBackbone
    images = staticmethod(images)
    direct_tiny = staticmethod(direct_tiny)
    other_architecture = staticmethod(lambda: timm.create_model("resnet18", pretrained=False).state_dict())


def test_default_variant():
    assert ResNetBackbone.default_variant == "resnet50"


def test_shapes_fingerprint_and_single_pass_kinds():
    bb = ResNetBackbone(cfg())
    x = bb.preprocess(images(3))
    assert x.shape == (3, 3, 64, 64) and x.dtype == torch.float32
    both = bb.image_features(x, kinds=("global", "dense"))
    assert both.global_.shape == (3, bb.model.num_features) == (3, 512)
    assert list(both.dense) == ["layer1", "layer2", "layer3", "layer4"]
    sizes = [m.shape[-1] for m in both.dense.values()]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4
    assert [m.shape[1] for m in both.dense.values()] == [64, 128, 256, 512]
    torch.testing.assert_close(both.global_, bb.image_features(x).global_)
    assert bb.image_features(x, kinds=("dense",)).global_ is None
    fp = bb.fingerprint()
    assert fp["weights"] == "random(seed=0,init=v2)" == ResNetBackbone.weights_fingerprint(cfg())
    assert (fp["arch"], fp["weights_kind"], fp["input_size"], fp["dtype"]) == ("resnet10t", "random",
                                                                             [3, 64, 64], "fp32")


def test_hub_cache_round_trip(tmp_path, monkeypatch):
    model = direct_tiny(seed=5)
    bb = load_hub_weights(ResNetBackbone, cfg, monkeypatch, tmp_path / "hub", "org/tiny",
                          {"model.safetensors": model.state_dict()})
    x = bb.preprocess(images())
    torch.testing.assert_close(bb.image_features(x).global_, timm_global(model, x))


@pytest.mark.parametrize("variant", ["resnet50", "resnet101", "tiny"])
def test_card_params_and_width_match_the_architecture(variant):
    from backbones.cards import RESNET

    card = RESNET[variant]
    with torch.device("meta"):
        model = timm.create_model(card.arch, pretrained=False, num_classes=0)
    assert card.extra["params"] == sum(p.numel() for p in model.parameters())
    assert card.extra["embed_dim"] == model.num_features
