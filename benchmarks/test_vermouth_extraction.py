"""Vermouth tiny extraction: the harness's path vs a plain diffusers path (reference_vermouth.py).

Both sides get the same preprocessed mini_coop images, the same weights (same configs and seed) and
prompt=blip. The harness batches images (the backbone's batch size), exits the UNet after the deepest block
the selected levels need, and reads captions from its caption cache (warm: filled by the correctness check;
its VAE-latent cache too; the cold number, captions generated and latents encoded once per image in
batches, is reported beside it and must meet the target as well). The reference
runs batch 1, generates the caption again for every image and runs the full UNet with forward hooks.
Features must agree within 1e-5 (fp32) before anything is timed. Target: >= 2x images/s.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from _bench import bench_median, median_time, report
from reference_vermouth import ReferenceVermouth

N_IMAGES = 16
BATCH = 16
ATOL = 1e-5
STAGES = {"L0-L3": ("L0", "L1", "L2", "L3"), "L0-L2": ("L0", "L1", "L2")}


@pytest.fixture(scope="module")
def images():
    from harness.plan.planner import open_dataset

    ds = open_dataset("mini_coop")
    return [ds.load_image(it) for it in ds.splits()["test"][:: max(1, len(ds.splits()["test"]) // N_IMAGES)][:N_IMAGES]]


def _harness(stages):
    from harness.catalog import BACKBONES
    from harness.config import BackboneConfig

    cfg = BackboneConfig(name="vermouth", variant="tiny", device="cpu", batch_size=BATCH,
                         options={"prompt": "blip", "stages": list(stages)})
    return BACKBONES.get("vermouth")(cfg)


def _extract(backbone, batch: torch.Tensor):
    """What harness.data.features._extract does per chunk of `batch_size` images (minus the feature cache)."""
    out = []
    with torch.inference_mode():
        for start in range(0, batch.shape[0], backbone.batch_size):
            out.append(backbone.image_features(batch[start:start + backbone.batch_size], kinds=("global", "dense")))
    return out


@pytest.mark.parametrize("stages", list(STAGES))
def test_vermouth_extraction_speed(benchmark, images, stages):
    torch.manual_seed(0)
    backbone = _harness(STAGES[stages])
    reference = ReferenceVermouth("tiny", seed=backbone.config.seed, t=backbone.options.t, stages=STAGES[stages],
                                  prompt="blip", prefix=backbone.options.caption_prefix,
                                  max_length=backbone.options.caption_max_length,
                                  min_length=backbone.options.caption_min_length)
    batch = backbone.preprocess(images)

    # -- same weights, same features (the first harness pass also fills the caption cache) -------------------
    for name, module in (("unet", reference.unet), ("vae", reference.vae), ("text_encoder", reference.text_encoder)):
        ours = getattr(backbone.parts, name).state_dict()
        assert all(torch.equal(v, ours[k]) for k, v in module.state_dict().items()), name
    got = _extract(backbone, batch)
    glob = torch.cat([f.global_ for f in got])
    dense = {k: torch.cat([f.dense[k] for f in got]) for k in got[0].dense}
    ref = reference.extract(batch)
    ref_glob = torch.cat([g for g, _ in ref])
    assert glob.shape == ref_glob.shape
    err_global = float((glob - ref_glob).abs().max())
    err_dense = max(float((dense[k] - torch.cat([lv[k] for _, lv in ref])).abs().max()) for k in dense)
    assert err_global <= ATOL and err_dense <= ATOL, (err_global, err_dense)

    # -- timings ---------------------------------------------------------------------------------------
    ref_s = median_time(lambda: reference.extract(batch), repeats=3)
    captioner = backbone.captioner
    warm_cache, warm_latents = captioner.cache, backbone.latent_cache

    def cold():
        captioner.cache = type(warm_cache)(Path(tempfile.mkdtemp(prefix="captions-")), captioner.fingerprint)
        backbone.latent_cache = None  # every image through the VAE
        try:
            _extract(backbone, batch)
        finally:
            captioner.cache, backbone.latent_cache = warm_cache, warm_latents

    cold_s = median_time(cold, repeats=1)
    benchmark.group = "vermouth-extraction"
    benchmark.pedantic(_extract, args=(backbone, batch), rounds=5, warmup_rounds=1, iterations=1)
    ours_s = bench_median(benchmark)
    report(benchmark, f"vermouth extraction, stages {stages}, {N_IMAGES} images, prompt=blip",
           harness_images_per_s=N_IMAGES / ours_s, reference_images_per_s=N_IMAGES / ref_s,
           speedup=ref_s / ours_s, harness_cold_captions_images_per_s=N_IMAGES / cold_s,
           speedup_cold_captions=ref_s / cold_s, early_exit_after=str(backbone.diffusion._stop_at),
           max_abs_diff_global=err_global, max_abs_diff_dense=err_dense)
    assert ref_s / ours_s >= 2.0, f"harness only {ref_s / ours_s:.2f}x the reference"
    assert ref_s / cold_s >= 2.0, f"harness (cold caches) only {ref_s / cold_s:.2f}x the reference"


def test_latent_cache_in_a_t_sweep(benchmark, images):
    """A sweep over t re-encodes nothing: the second t reads the first one's VAE latents (same features as
    encoding afresh, bit for bit). Ratio: the second t's extraction without vs with the latent cache."""
    first = _harness(STAGES["L0-L3"])
    batch = first.preprocess(images)
    _extract(first, batch)  # t=200 fills the latent cache

    from harness.catalog import BACKBONES
    from harness.config import BackboneConfig

    cfg = BackboneConfig(name="vermouth", variant="tiny", device="cpu", batch_size=BATCH, options={"t": 50})
    cached, plain = BACKBONES.get("vermouth")(cfg), BACKBONES.get("vermouth")(cfg)
    plain.latent_cache = None
    got, want = _extract(cached, batch), _extract(plain, batch)
    assert all(torch.equal(g.global_, w.global_) for g, w in zip(got, want, strict=True))
    assert cached.latent_cache.stats.hits == N_IMAGES
    plain_s = median_time(lambda: _extract(plain, batch), repeats=5)
    benchmark.group = "vermouth-latent-cache"
    benchmark.pedantic(_extract, args=(cached, batch), rounds=5, warmup_rounds=1, iterations=1)
    cached_s = bench_median(benchmark)
    report(benchmark, f"vermouth t sweep, {N_IMAGES} images, second t", plain_images_per_s=N_IMAGES / plain_s,
           latent_cache_images_per_s=N_IMAGES / cached_s, speedup=plain_s / cached_s)
