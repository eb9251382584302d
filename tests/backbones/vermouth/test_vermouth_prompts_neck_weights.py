"""BLIP prompts and their cache, the trainable neck, and weights that are missing offline."""

from __future__ import annotations

import json

import pytest
import torch
from vermouth_helpers import images, tiny_cfg

from backbones.vermouth.backbone import VermouthBackbone
from backbones.vermouth.diffusion import image_id
from harness.errors import WeightsMissingError
from harness.paths import cache_root


def test_blip_caption_once_across_two_instances(tiny_folder):
    first = VermouthBackbone(tiny_cfg(weights=str(tiny_folder)), prompt="blip")
    assert first.captioner_weights.path == tiny_folder / "blip"  # the folder's own BLIP
    x = first.preprocess(images(3))
    seen: list[torch.Tensor] = []
    first.parts.text_encoder.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    feats = first.image_features(x).global_
    assert (first.captioner.hits, first.captioner.misses) == (0, 3)
    files = sorted((cache_root() / "captions" / first.captioner.fingerprint).glob("*.json"))
    assert len(files) == 3
    captions = first.prompts.prompts(x, [image_id(im) for im in x])
    assert (first.captioner.hits, first.captioner.misses) == (3, 3)
    record = json.loads(files[0].read_text())
    assert record["raw"].startswith("a picture of") and record["captioner"]["prefix"] == "a picture of "
    assert record["caption"] in captions and not record["caption"].startswith("a picture of")
    # The captions (prefix stripped, each distinct one once) are what the SD text encoder read.
    assert len(seen) == 1 and torch.equal(seen[0], first.text.tokens(list(dict.fromkeys(captions))))

    second = VermouthBackbone(tiny_cfg(weights=str(tiny_folder)), prompt="blip")
    assert second.captioner.fingerprint == first.captioner.fingerprint
    torch.testing.assert_close(second.image_features(x).global_, feats, atol=0, rtol=0)
    assert (second.captioner.hits, second.captioner.misses) == (3, 0)
    assert second.captioner._model is None  # BLIP was never even loaded
    empty = VermouthBackbone(tiny_cfg(weights=str(tiny_folder)))
    assert not torch.allclose(empty.image_features(x).global_, feats)
    assert "captioner" in first.fingerprint() and "captioner" not in empty.fingerprint()


def test_neck_trains_only_head_and_adapters():
    bb = VermouthBackbone(tiny_cfg(), expert="resnet18")
    dense = bb.image_features(bb.preprocess(images(4)), kinds=("dense",)).dense
    assert {"expert_layer2", "expert_layer3", "expert_layer4"} <= set(dense)
    frozen = [p for m in bb.parts.modules().values() for p in m.parameters()] + list(bb.expert.model.parameters())
    assert frozen and not any(p.requires_grad for p in frozen)
    for make, target_shape in ((bb.neck, (4, 32)), (bb.dense_neck, (4, 32, 8, 8))):
        neck = make()
        assert set(dict(neck.named_children())) == {"fusion", "head"}
        torch.manual_seed(0)
        target = torch.nn.functional.normalize(torch.randn(target_shape), dim=1)
        opt = torch.optim.AdamW(neck.parameters(), lr=3e-3)
        losses = []
        for _ in range(15):
            out = neck(dense)
            assert out.shape == target_shape
            loss = (1 - (out * target).sum(dim=1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0] - 0.05, losses
        assert all(p.grad is not None for p in neck.parameters() if p.requires_grad)
        assert not any(p.requires_grad for p in frozen)
    a, b = bb.neck(), bb.neck()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))  # seeded init


def test_missing_hub_id_offline_names_it_and_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    cfg = tiny_cfg(variant="sd15")
    for call in (lambda: VermouthBackbone(cfg), lambda: VermouthBackbone.weights_fingerprint(cfg)):
        with pytest.raises(WeightsMissingError) as err:
            call()
        assert "hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --revision 451f4fe" in str(err.value)


def test_incomplete_folder_names_the_missing_part(tiny_folder, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_folder, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(WeightsMissingError, match="vae/config.json"):
        VermouthBackbone(tiny_cfg(weights=str(broken)))
    (broken / "vae").mkdir()
    (broken / "vae" / "config.json").write_text("{}")
    with pytest.raises(WeightsMissingError, match="vae"):
        VermouthBackbone(tiny_cfg(weights=str(broken)))
