"""Vermouth's frozen features: folder loading, level shapes, values against plain diffusers, determinism."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from vermouth_helpers import images, tiny_cfg

from backbones.vermouth.backbone import VermouthBackbone
from backbones.vermouth.diffusion import image_id, noise_seed
from harness.catalog import BACKBONES
from harness.errors import ConfigError


def reference_levels(folder, x: torch.Tensor, t: int, seed: int, prompt: str = "") -> dict[str, torch.Tensor]:
    """The method's four levels computed with plain diffusers/transformers calls and our own hooks."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae").eval()
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval()
    text = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval()
    tok = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    sched = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    taps: dict[str, torch.Tensor] = {}
    unet.mid_block.register_forward_hook(lambda m, i, o: taps.__setitem__("mid", o))
    for k, block in enumerate(unet.up_blocks):
        block.register_forward_hook(lambda m, i, o, k=k: taps.__setitem__(f"up{k}", o))
    with torch.no_grad():
        z0 = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
        # ε: a float64 standard normal from the image's own generator, rounded to float32 (portable across CPUs)
        eps = torch.stack([torch.randn(z0.shape[1:], dtype=torch.float64, generator=torch.Generator().manual_seed(
            noise_seed(image_id(im), seed))).float() for im in x])
        ts = torch.full((x.shape[0],), t, dtype=torch.long)
        x_t = sched.add_noise(z0, eps, ts)
        ids = tok([prompt] * x.shape[0], padding="max_length", max_length=77, truncation=True,
                  return_tensors="pt").input_ids
        ctx = text(ids).last_hidden_state
        unet(x_t, ts, encoder_hidden_states=ctx)
    return {"L0": taps["mid"], "L1": taps["up0"], "L2": taps["up1"],
            "L3": torch.cat([taps["up2"], taps["up3"]], dim=1)}


def test_registered_lazily_and_cards_are_torch_free():
    assert BACKBONES.get("vermouth") is VermouthBackbone
    assert VermouthBackbone.default_variant == "sd15"
    probe = "import sys, backbones.vermouth.cards, backbones.vermouth.options; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"


def test_folder_levels_match_plain_diffusers(tiny_folder):
    bb = VermouthBackbone(tiny_cfg(weights=str(tiny_folder), seed=7))
    assert bb.weights.kind == "file" and bb.weights.fingerprint.startswith("sha256:")
    x = bb.preprocess(images(3))
    assert x.shape == (3, 3, 64, 64) and x.min() >= -1 and x.max() <= 1
    out = bb.image_features(x, kinds=("global", "dense"))
    boc = bb.parts.unet.config.block_out_channels  # (16, 32, 64, 64)
    lat = 64 // 8
    expected = {"L0": (boc[3], lat // 8), "L1": (boc[3], lat // 4), "L2": (boc[2], lat // 2),
                "L3": (boc[1] + boc[0], lat)}
    assert {k: (v.shape[1], v.shape[-1]) for k, v in out.dense.items()} == expected
    assert bb.dense_channels() == {k: c for k, (c, _) in expected.items()}
    assert out.global_.shape == (3, sum(c for c, _ in expected.values()))
    ref = reference_levels(tiny_folder, x, t=200, seed=7)
    for level, value in ref.items():
        assert (out.dense[level] - value).abs().max().item() <= 1e-5, level
    torch.testing.assert_close(out.global_, torch.cat([v.mean(dim=(2, 3)) for v in ref.values()], 1),
                               atol=1e-5, rtol=0)
    # ε depends on the image, not on the batch it came in; early exit and map recording change nothing.
    alone = bb.image_features(x[1:2], kinds=("dense",)).dense
    for level in ref:
        torch.testing.assert_close(alone[level][0], out.dense[level][1], atol=1e-5, rtol=0)
    mid_only = VermouthBackbone(tiny_cfg(weights=str(tiny_folder), seed=7), stages=["L0"])
    assert mid_only.diffusion._stop_at == "mid"
    torch.testing.assert_close(mid_only.image_features(x, ("dense",)).dense["L0"], out.dense["L0"], atol=1e-6, rtol=0)
    maps = VermouthBackbone(tiny_cfg(weights=str(tiny_folder), seed=7), cross_attention=True, cross_attention_l3=True)
    dense = maps.image_features(x, ("dense",)).dense
    for level in ref:
        c = expected[level][0]
        assert dense[level].shape[1] == c + (77 if level != "L0" else 0)
        torch.testing.assert_close(dense[level][:, :c], out.dense[level], atol=1e-6, rtol=0)
    attn = dense["L1"][:, expected["L1"][0]:]  # head- and layer-mean softmax over the 77 tokens
    torch.testing.assert_close(attn.sum(dim=1), torch.ones_like(attn[:, 0]), atol=1e-4, rtol=0)


def test_t_and_stages_change_features_and_fingerprint_same_config_is_identical():
    x = VermouthBackbone(tiny_cfg()).preprocess(images(2))
    base = VermouthBackbone(tiny_cfg())
    a = base.image_features(x, ("global", "dense"))
    b = VermouthBackbone(tiny_cfg()).image_features(x, ("global", "dense"))
    assert torch.equal(a.global_, b.global_) and all(torch.equal(a.dense[k], b.dense[k]) for k in a.dense)
    assert torch.equal(base.image_features(x).global_, a.global_)  # and the same object twice
    other_t = VermouthBackbone(tiny_cfg(), t=600)
    assert not torch.allclose(other_t.image_features(x).global_, a.global_)
    assert other_t.fingerprint()["t"] == 600 and other_t.fingerprint() != base.fingerprint()
    stages = VermouthBackbone(tiny_cfg(), stages=["L3", "L1"])
    s = stages.image_features(x, ("global", "dense"))
    assert list(s.dense) == ["L1", "L3"] and torch.equal(s.dense["L1"], a.dense["L1"])
    assert s.global_.shape[1] == a.dense["L1"].shape[1] + a.dense["L3"].shape[1]
    assert stages.fingerprint()["stages"] == ["L1", "L3"] and stages.fingerprint() != base.fingerprint()
    clean = VermouthBackbone(tiny_cfg(), noise="none")
    assert not torch.allclose(clean.image_features(x).global_, a.global_)
    assert clean.fingerprint() != base.fingerprint()
    fixed = VermouthBackbone(tiny_cfg(), prompt="fixed:a photo of")
    assert not torch.allclose(fixed.image_features(x).global_, a.global_)
    # Another seed: other random weights for `tiny`; for pretrained weights it changes the noise.
    assert VermouthBackbone(tiny_cfg(seed=1)).fingerprint()["noise_seed"] == 1
    weights = VermouthBackbone.weights_fingerprint(tiny_cfg())
    assert weights == base.fingerprint()["weights"] and weights.startswith("random(seed=0,init=v2):tiny:")
    assert base.param_count == base.card.extra["params"]  # the card's listing number is the real one


def test_random_weights_are_named_by_seed_and_component_configs(monkeypatch):
    from backbones.vermouth.configs import TINY

    before = VermouthBackbone.weights_fingerprint(tiny_cfg())
    assert VermouthBackbone.weights_fingerprint(tiny_cfg(seed=1)) != before
    monkeypatch.setitem(TINY["vae"], "scaling_factor", 1.0)
    assert VermouthBackbone.weights_fingerprint(tiny_cfg()) != before
    with_expert = VermouthBackbone.weights_fingerprint(tiny_cfg(options={"expert": "resnet18"}))
    assert with_expert.startswith(VermouthBackbone.weights_fingerprint(tiny_cfg()) + "|expert=random(seed=0,init=v2)")


def test_options_are_validated():
    for bad, key in ((dict(stages=["L4"]), "stages"), (dict(prompt="classname"), "prompt"),
                     (dict(resolution=100), "resolution"), (dict(tt=3), "tt"), (dict(noise="ddim"), "noise")):
        with pytest.raises(ConfigError, match=key):
            VermouthBackbone(tiny_cfg(), **bad)
    with pytest.raises(ConfigError, match="'t' must be in"):
        VermouthBackbone(tiny_cfg(), t=1000)


def test_bf16_autocast_returns_fp32():
    bb = VermouthBackbone(tiny_cfg(dtype="bf16"))
    out = bb.image_features(bb.preprocess(images(1)), kinds=("global", "dense"))
    assert out.global_.dtype == torch.float32 and out.dense["L3"].dtype == torch.float32
