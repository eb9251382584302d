"""The expert taps join their levels as the official code does per expert (ResNet-18: cat[L2norm, L2norm];
DINOv2: plain concat), with `expert_fusion` choosing either for any expert."""

import pytest
import torch
from vermouth_helpers import images, tiny_cfg

from backbones.vermouth.backbone import VermouthBackbone
from backbones.vermouth.expert import ExpertFusion, fusion_mode


def fused(mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    fusion = ExpertFusion({"tap": 4}, {"tap": "L1"}, mode)
    level, tap = torch.randn(2, 3, 5, 5) * 7, torch.randn(2, 4, 5, 5)
    return fusion({"L1": level}, {"tap": tap})["L1"], level, fusion.adapters["tap"](tap)


def test_plain_concatenates_the_level_and_the_adapted_tap_as_they_are():
    out, level, adapted = fused("plain")
    assert torch.equal(out, torch.cat([level, adapted], dim=1))


def test_l2_normalises_each_part_along_channels_first():
    out, level, adapted = fused("l2")
    def unit(x):  # a zero vector (the adapter's ReLU can give one) stays zero, as F.normalize's eps keeps it
        return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)

    by_hand = torch.cat([unit(level), unit(adapted)], 1)
    torch.testing.assert_close(out, by_hand)
    assert torch.allclose(out[:, :3].norm(dim=1), torch.ones(2, 5, 5))


def test_official_mode_per_expert():
    assert (fusion_mode("resnet18", "official"), fusion_mode("dinov2", "official")) == ("l2", "plain")
    assert fusion_mode("dinov2", "l2") == "l2"
    with pytest.raises(ValueError, match="fusion mode"):
        ExpertFusion({"tap": 4}, {"tap": "L1"}, "official")


@pytest.mark.parametrize(("options", "mode"), [({"expert": "dinov2"}, "plain"),
                                               ({"expert": "dinov2", "expert_fusion": "l2"}, "l2"),
                                               ({"expert": "resnet18"}, "l2")])
def test_the_neck_fuses_as_the_options_say(options, mode):
    bb = VermouthBackbone(tiny_cfg(), **options)
    neck = bb.neck()
    assert neck.fusion.mode == mode
    dense = bb.image_features(bb.preprocess(images(2)), kinds=("dense",)).dense
    assert neck(dense).shape == (2, 32)
