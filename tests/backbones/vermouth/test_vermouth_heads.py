"""The U-head and OVSS head follow the method's channel arithmetic (§4.1 table, §4.2) at SD-1.5 widths."""

from __future__ import annotations

import torch

from backbones.vermouth.expert import ExpertFusion
from backbones.vermouth.prompts import CaptionCache, strip_prefix
from backbones.vermouth.uhead import DenseUHead, UHead

SD_LEVELS = {"L0": 1280, "L1": 1280, "L2": 1280, "L3": 960}
WIDTHS = (1024, 768, 512, 256)


def conv_inputs(head: UHead) -> list[int]:
    return [head.blocks[lv][0].in_channels for lv in ("L0", "L1", "L2", "L3")]


def test_uhead_conv_widths_match_the_method():
    xattn = {k: c + (77 if k in ("L1", "L2") else 0) for k, c in SD_LEVELS.items()}
    assert conv_inputs(UHead(xattn, WIDTHS, 32, 8, 768)) == [2048, 1869, 1613, 960]  # FSC `fuse`, cross-attn
    fusion = ExpertFusion({"expert_layer2": 128, "expert_layer3": 256, "expert_layer4": 512},
                          {"expert_layer2": "L3", "expert_layer3": "L2", "expert_layer4": "L1"})
    with_expert = {k: c + fusion.extra_channels().get(k, 0) for k, c in SD_LEVELS.items()}
    assert conv_inputs(UHead(with_expert, WIDTHS, 32, 8, 768)) == [2048, 2304, 1792, 1088]  # FSC `fuse_expert`


def test_uhead_and_dense_head_shapes_on_sd_sized_levels():
    torch.manual_seed(0)
    levels = {k: torch.randn(2, c, s, s) for (k, c), s in zip(SD_LEVELS.items(), (4, 8, 16, 32), strict=True)}
    emb = UHead(SD_LEVELS, WIDTHS, 32, 8, 768)(levels)  # 256 px input: L0 is already 4x4
    assert emb.shape == (2, 768) and torch.allclose(emb.norm(dim=1), torch.ones(2))
    dense = DenseUHead(SD_LEVELS, (2048, 1024, 512, 256), 64, 32, 768).eval()
    assert [dense.project[lv][0].out_channels for lv in SD_LEVELS] == [2048, 1024, 512, 256]
    assert [sum(isinstance(m, torch.nn.Upsample) for m in dense.scale_heads[lv]) for lv in SD_LEVELS] == [3, 2, 1, 0]
    out = dense(levels)
    assert out.shape == (2, 768, 32, 32) and torch.allclose(out.norm(dim=1), torch.ones(2, 32, 32), atol=1e-5)


def test_caption_helpers(tmp_path):
    assert strip_prefix("a picture of  a dog on grass", "a picture of ") == "a dog on grass"
    assert strip_prefix("two cats", "a picture of ") == "two cats"
    cache = CaptionCache(tmp_path, "fp")
    assert cache.get("x") is None
    cache.put("x", "a dog", {"raw": "a picture of a dog"})
    assert cache.get("x") == "a dog"
    (tmp_path / "fp" / "x.json").write_text("{broken")
    assert cache.get("x") is None  # a corrupt entry is a miss, never an error
