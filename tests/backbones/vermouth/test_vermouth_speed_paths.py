"""Vermouth's speed paths change no number: the VAE-latent cache and channels-last."""

from __future__ import annotations

import torch
from vermouth_helpers import images, tiny_cfg

from backbones.vermouth.backbone import VermouthBackbone


def _count_encodes(bb: VermouthBackbone) -> list[int]:
    """Wrap the VAE's encode to record the batch size of every call."""
    calls: list[int] = []
    encode = bb.parts.vae.encode

    def counted(x, *args, **kwargs):
        calls.append(x.shape[0])
        return encode(x, *args, **kwargs)

    bb.parts.vae.encode = counted
    return calls


def test_latents_equal_plain_diffusers_and_are_encoded_once_across_a_sweep(tiny_folder):
    from diffusers import AutoencoderKL

    cfg = tiny_cfg(weights=str(tiny_folder), seed=7)
    first = VermouthBackbone(cfg)
    x = first.preprocess(images(3))
    calls = _count_encodes(first)
    a = first.image_features(x, ("global", "dense"))
    assert calls == [3] and first.latent_cache.stats.misses == 3
    # The stored latent is the plain diffusers posterior mean times the scaling factor.
    vae = AutoencoderKL.from_pretrained(tiny_folder, subfolder="vae").eval()
    with torch.no_grad():
        z_ref = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
    from backbones.vermouth.diffusion import image_id

    stored = torch.stack([first.latent_cache.get(image_id(im)) for im in x])
    torch.testing.assert_close(stored, z_ref, atol=1e-5, rtol=0)

    # Another t in another process-like instance: no VAE pass at all, same numbers as encoding afresh.
    other_t = VermouthBackbone(cfg, t=600)
    calls = _count_encodes(other_t)
    cached = other_t.image_features(x, ("global", "dense"))
    assert calls == [] and other_t.latent_cache.stats.hits == 3
    fresh_bb = VermouthBackbone(cfg, t=600)
    fresh_bb.latent_cache = None
    fresh = fresh_bb.image_features(x, ("global", "dense"))
    assert torch.equal(cached.global_, fresh.global_)
    assert all(torch.equal(cached.dense[k], fresh.dense[k]) for k in fresh.dense)
    assert not torch.allclose(cached.global_, a.global_)  # t did change the features

    # A batch mixing seen and unseen images encodes only the unseen ones, in one pass.
    mixed = torch.cat([x[:1], first.preprocess(images(5))[3:]])
    calls = _count_encodes(other_t)
    other_t.image_features(mixed)
    assert calls == [2]


def test_corrupt_latent_entry_is_recomputed_never_used():
    bb = VermouthBackbone(tiny_cfg())
    x = bb.preprocess(images(2))
    want = bb.image_features(x).global_
    for entry in bb.latent_cache.dir.rglob("*.safetensors"):
        entry.write_bytes(entry.read_bytes()[:-7] + b"garbage")
    again = VermouthBackbone(tiny_cfg())
    calls = _count_encodes(again)
    assert torch.equal(again.image_features(x).global_, want)
    assert calls == [2] and again.latent_cache.stats.corrupt == 2


def test_latent_namespace_follows_weights_and_dtype_not_feature_options():
    base = VermouthBackbone(tiny_cfg())
    assert VermouthBackbone(tiny_cfg(), t=10, stages=["L1"]).latent_cache.dir == base.latent_cache.dir
    assert VermouthBackbone(tiny_cfg(seed=1)).latent_cache.dir != base.latent_cache.dir  # other random weights
    assert VermouthBackbone(tiny_cfg(dtype="bf16")).latent_cache.dir != base.latent_cache.dir


def test_channels_last_keeps_the_features():
    bb = VermouthBackbone(tiny_cfg())
    assert not bb.channels_last  # CPU default; CUDA turns it on
    bb.latent_cache = None
    x = bb.preprocess(images(3))
    want = bb.image_features(x, ("global", "dense"))
    bb.set_channels_last(True)
    conv = bb.parts.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    got = bb.image_features(x, ("global", "dense"))
    torch.testing.assert_close(got.global_, want.global_, atol=1e-5, rtol=0)
    for level in want.dense:
        torch.testing.assert_close(got.dense[level], want.dense[level], atol=1e-5, rtol=0)
