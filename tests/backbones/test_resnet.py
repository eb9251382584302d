"""The timm ResNet backbone: seeded init, feature shapes, and exact weight round trips (file and hub)."""

from __future__ import annotations

import types

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from backbones.resnet import ResNetBackbone
from harness.catalog import BACKBONES
from harness.errors import HarnessError

REV = "fedcba9876543210fedcba9876543210fedcba98"
TINY_OVERLAY = {"input_size": (3, 112, 112)}


def cfg(**kw):
    """A stand-in for harness.config.BackboneConfig."""
    base = dict(name="resnet", variant="tiny", weights=None, device="cpu", dtype="fp32", batch_size=8, seed=0)
    return types.SimpleNamespace(**{**base, **kw})


def images(n: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (130 + 7 * i, 160, 3), dtype=np.uint8)) for i in range(n)]


def direct_tiny(seed: int) -> torch.nn.Module:
    """The tiny model made by timm directly, with its classifier (the harness must drop `fc.*`)."""
    torch.manual_seed(seed)
    return timm.create_model("resnet10t", pretrained=False, pretrained_cfg_overlay=TINY_OVERLAY).eval()


def direct_global(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.forward_head(model.forward_features(x), pre_logits=True)


def test_registered_lazily():
    assert BACKBONES.get("resnet") is ResNetBackbone
    assert ResNetBackbone.default_variant == "resnet50"


def test_same_seed_same_features_other_seed_differs():
    x = ResNetBackbone(cfg()).preprocess(images())
    a = ResNetBackbone(cfg()).image_features(x).global_
    b = ResNetBackbone(cfg()).image_features(x).global_
    c = ResNetBackbone(cfg(seed=1)).image_features(x).global_
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_shapes_fingerprint_and_single_pass_kinds():
    bb = ResNetBackbone(cfg())
    x = bb.preprocess(images(3))
    assert x.shape == (3, 3, 112, 112) and x.dtype == torch.float32
    both = bb.image_features(x, kinds=("global", "dense"))
    assert both.global_.shape == (3, bb.model.num_features) == (3, 512)
    assert list(both.dense) == ["layer1", "layer2", "layer3", "layer4"]
    sizes = [m.shape[-1] for m in both.dense.values()]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4
    assert [m.shape[1] for m in both.dense.values()] == [64, 128, 256, 512]
    torch.testing.assert_close(both.global_, bb.image_features(x).global_)
    assert bb.image_features(x, kinds=("dense",)).global_ is None
    with pytest.raises(HarnessError, match="feature kind"):
        bb.image_features(x, kinds=("tokens",))
    fp = bb.fingerprint()
    assert fp["weights"] == "random(seed=0)" == ResNetBackbone.weights_fingerprint(cfg())
    assert (fp["arch"], fp["weights_kind"], fp["input_size"], fp["dtype"]) == ("resnet10t", "random",
                                                                             [3, 112, 112], "fp32")
    assert not any(p.requires_grad for p in bb.model.parameters()) and not bb.model.training


@pytest.mark.parametrize("safe", [True, False])
def test_timm_save_for_hf_round_trip(tmp_path, safe):
    model = direct_tiny(seed=123)
    timm.models.save_for_hf(model, tmp_path / "w", safe_serialization=safe)
    bb = ResNetBackbone(cfg(weights=str(tmp_path / "w")))
    assert bb.weights.kind == "file" and bb.weights.fingerprint.startswith("sha256:")
    assert bb.weights.path.name == ("model.safetensors" if safe else "pytorch_model.bin")
    x = bb.preprocess(images())
    torch.testing.assert_close(bb.image_features(x).global_, direct_global(model, x))


def test_hub_cache_round_trip(tmp_path, monkeypatch):
    model = direct_tiny(seed=5)
    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "snapshots" / REV).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    save_file(model.state_dict(), str(repo / "snapshots" / REV / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bb = ResNetBackbone(cfg(weights="hf-hub:org/tiny"))
    assert bb.weights.fingerprint == f"org/tiny@{REV}" == bb.fingerprint()["weights"]
    x = bb.preprocess(images())
    torch.testing.assert_close(bb.image_features(x).global_, direct_global(model, x))


def test_wrong_architecture_names_the_file(tmp_path):
    path = tmp_path / "r18.safetensors"
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), str(path))
    with pytest.raises(HarnessError, match=str(path)):
        ResNetBackbone(cfg(weights=str(path)))


def test_bf16_autocast_on_cpu_returns_fp32():
    bb = ResNetBackbone(cfg(dtype="bf16"))
    out = bb.image_features(bb.preprocess(images(1)), kinds=("global", "dense"))
    assert out.global_.dtype == torch.float32 and out.dense["layer4"].dtype == torch.float32


@pytest.mark.parametrize("variant", ["resnet50", "resnet101", "tiny"])
def test_card_params_and_width_match_the_architecture(variant):
    from backbones.cards import RESNET

    card = RESNET[variant]
    with torch.device("meta"):
        model = timm.create_model(card.arch, pretrained=False, num_classes=0)
    assert card.extra["params"] == sum(p.numel() for p in model.parameters())
    assert card.extra["embed_dim"] == model.num_features
