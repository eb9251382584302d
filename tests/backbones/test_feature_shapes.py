"""`Backbone.feature_shapes` (no weights, no full-size forward) equals what `image_features` really gives.

The tiny variants run a real forward pass on random weights; the full-size variants are checked on the meta
device (shapes only, no memory, no compute) and against the numbers their papers and cards state.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from harness.catalog import BACKBONES
from harness.config import BackboneConfig


def real_shapes(name: str, options: dict) -> dict:
    cfg = BackboneConfig(name=name, variant="tiny", options=options)
    backbone = BACKBONES.get(name)(cfg)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    feats = backbone.image_features(backbone.preprocess([image]), kinds=("global", "dense"))
    return {"global": {"global": tuple(feats.global_.shape[1:])},
            "dense": {k: tuple(v.shape[1:]) for k, v in feats.dense.items()}}


@pytest.mark.parametrize(("name", "options"), [
    ("resnet", {}), ("dino", {}), ("clip", {}), ("vermouth", {}),
    ("vermouth", {"expert": "resnet18"}),
    ("vermouth", {"expert": "dinov2", "stages": ["L1", "L3"]}),
    ("vermouth", {"cross_attention": True, "cross_attention_l3": True, "resolution": 128}),
])
def test_tiny_feature_shapes_equal_a_real_forward(name, options):
    cfg = BackboneConfig(name=name, variant="tiny", options=options)
    assert BACKBONES.get(name).feature_shapes(cfg) == real_shapes(name, options)


def test_vermouth_sd15_levels_follow_the_resolution():
    cls = BACKBONES.get("vermouth")
    shapes = cls.feature_shapes(BackboneConfig(name="vermouth", variant="sd15"))
    assert shapes["dense"] == {"L0": (1280, 8, 8), "L1": (1280, 16, 16), "L2": (1280, 32, 32), "L3": (960, 64, 64)}
    assert shapes["global"] == {"global": (1280 + 1280 + 1280 + 960,)}
    big = cls.feature_shapes(BackboneConfig(name="vermouth", variant="sd15", options={"resolution": 768}))
    assert big["dense"]["L0"] == (1280, 12, 12) and big["dense"]["L3"] == (960, 96, 96)
    expert = cls.feature_shapes(BackboneConfig(name="vermouth", variant="sd15", options={"expert": "resnet18"}))
    assert expert["dense"]["expert_layer2"] == (128, 64, 64) and expert["dense"]["expert_layer4"] == (512, 16, 16)
    assert cls.has_neck(BackboneConfig(name="vermouth", variant="sd15"))
    assert not BACKBONES.get("resnet").has_neck(BackboneConfig(name="resnet", variant="tiny"))


def test_full_size_cards_agree_with_a_meta_device_forward():
    """CLIP RN50 (ModifiedResNet path), ViT-B/16 and the timm ResNet-50 / DINOv2-S, shapes only."""
    import open_clip
    import timm

    from backbones.common import dense_block_indices

    def clip_meta(arch: str) -> dict:
        with torch.device("meta"):
            visual = open_clip.model.CLIP(**open_clip.get_model_config(arch)).visual
            size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
            x = torch.empty(1, 3, size, size)
            n = len(visual.transformer.resblocks) if hasattr(visual, "transformer") else 4
            idx = dense_block_indices(n) if hasattr(visual, "transformer") else [1, 2, 3, 4]
            res = visual.forward_intermediates(x, indices=idx, output_fmt="NCHW")
        return {"global": (tuple(res["image_features"].shape[1:])),
                "dense": [tuple(m.shape[1:]) for m in res["image_intermediates"]]}

    for variant, arch in (("rn50", "RN50"), ("vit-b-16", "ViT-B-16")):
        shapes = BACKBONES.get("clip").feature_shapes(BackboneConfig(name="clip", variant=variant))
        meta = clip_meta(arch)
        assert shapes["global"]["global"] == meta["global"] and list(shapes["dense"].values()) == meta["dense"]

    with torch.device("meta"):
        resnet = timm.create_model("resnet50", pretrained=False, num_classes=0)
        maps = resnet.forward_intermediates(torch.empty(1, 3, 224, 224), indices=[1, 2, 3, 4], intermediates_only=True)
        dino = timm.create_model("vit_small_patch14_dinov2.lvd142m", pretrained=False, num_classes=0,
                                 dynamic_img_size=True)
        tokens = dino.forward_intermediates(torch.empty(1, 3, 518, 518), indices=dense_block_indices(12),
                                            output_fmt="NCHW", intermediates_only=True)
    r = BACKBONES.get("resnet").feature_shapes(BackboneConfig(name="resnet", variant="resnet50"))
    assert list(r["dense"].values()) == [tuple(m.shape[1:]) for m in maps] and r["global"]["global"] == (2048,)
    d = BACKBONES.get("dino").feature_shapes(BackboneConfig(name="dino", variant="dinov2-s"))
    assert list(d["dense"].values()) == [tuple(m.shape[1:]) for m in tokens] and d["global"]["global"] == (384,)
