"""The `synthetic` load-test backbone: real feature shapes, bit-identical per image, marked synthetic everywhere,
never part of `all`. The expected shapes and sizes below are typed out from the real backbones (independent of
the cards the backbone reads)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from harness.catalog import BACKBONES
from harness.errors import ConfigError, HarnessError

# variant -> (resolution, {level: (C, H, W)}, global dim): Vermouth sd15's levels, CLIP ViT-L/14's blocks,
# timm ResNet-50's stages, and the tiny test variant.
SD15 = {"L0": 1280, "L1": 1280, "L2": 1280, "L3": 960}
EXPECTED: dict[str, tuple[int, dict[str, tuple[int, int, int]], int]] = {
    "sd15-512": (512, {k: (c, s, s) for (k, c), s in zip(SD15.items(), (8, 16, 32, 64), strict=True)}, 4800),
    "sd15-256": (256, {k: (c, s, s) for (k, c), s in zip(SD15.items(), (4, 8, 16, 32), strict=True)}, 4800),
    "vit-l-14": (224, {f"block{k}": (1024, 16, 16) for k in (6, 12, 18, 24)}, 768),
    "resnet50": (224, {"layer1": (256, 56, 56), "layer2": (512, 28, 28), "layer3": (1024, 14, 14),
                       "layer4": (2048, 7, 7)}, 2048),
    "tiny": (32, {"L0": (16, 4, 4), "L1": (8, 8, 8)}, 24),
}
DENSE_BYTES = {"sd15-512": 22_609_920, "sd15-256": 5_652_480}  # fp32, per image


def cfg(variant: str = "tiny", **kw: Any) -> types.SimpleNamespace:
    base = dict(name="synthetic", variant=variant, weights=None, device="cpu", dtype="fp32", batch_size=8, seed=0)
    return types.SimpleNamespace(**{**base, **kw})


def build(variant: str = "tiny", **kw: Any):
    return BACKBONES.get("synthetic")(cfg(variant, **kw))


def images(n: int, seed: int = 0, size: tuple[int, int] = (120, 90)) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def as_bytes(features) -> dict[str, bytes]:
    out = {k: v.numpy().tobytes() for k, v in features.dense.items()}
    out["global"] = features.global_.numpy().tobytes()
    return out


# -- registration and marking --------------------------------------------------------------------------------

def test_registered_lazily_marked_synthetic_and_out_of_all_as_data():
    entry = BACKBONES.entry("synthetic")
    assert entry.meta["in_all"] is False
    assert entry.meta["description"].startswith("SYNTHETIC (load tests only)")
    cls = BACKBONES.get("synthetic")
    assert cls.__name__ == "SyntheticBackbone" and set(cls.variants) == set(EXPECTED)
    for card in cls.variants.values():
        assert card.description.startswith("SYNTHETIC (load tests only)") and card.weights == "random"


def test_all_excludes_it_an_explicit_name_includes_it():
    from harness.plan.planner import resolve_backbones

    everything = resolve_backbones(["all"])
    assert "synthetic" not in everything and {"resnet", "clip", "dino", "vermouth"} <= set(everything)
    assert resolve_backbones(["synthetic"]) == ["synthetic"]
    assert resolve_backbones(["resnet", "synthetic"]) == ["resnet", "synthetic"]


def test_resolving_all_imports_no_backbone_module():
    probe = ("import sys; from harness.plan.planner import resolve_backbones; names = resolve_backbones(['all']); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'backbones')), 'synthetic' in names)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] False"


# -- shapes --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_every_variant_has_the_real_shapes(variant):
    side, levels, global_dim = EXPECTED[variant]
    bb = build(variant)
    x = bb.preprocess(images(1))
    assert x.shape == (1, 3, side, side) and x.dtype == torch.float32
    out = bb.image_features(x, kinds=("global", "dense"))
    assert {k: tuple(v.shape[1:]) for k, v in out.dense.items()} == levels
    assert list(out.dense) == list(levels)  # shallow to deep, as the real backbone names them
    assert out.global_.shape == (1, global_dim)
    assert all(v.dtype == torch.float32 for v in [out.global_, *out.dense.values()])
    nbytes = sum(v.numel() * v.element_size() for v in out.dense.values())
    assert nbytes == sum(4 * c * h * w for c, h, w in levels.values())
    if variant in DENSE_BYTES:
        assert nbytes == DENSE_BYTES[variant]
    assert bb.dense_shapes(side, side) == levels
    assert type(bb).feature_shapes(cfg(variant)) == {"global": {"global": (global_dim,)}, "dense": levels}
    assert bb.card.extra["embed_dim"] == global_dim and bb.param_count == bb.card.extra["params"]


@pytest.mark.parametrize(("variant", "height", "width", "levels"), [
    # 512 × 640 windows (the OVSS task's inputs): strides 64/32/16/8, 4/8/16/32, a floor(side / 14) ViT grid
    ("sd15-512", 512, 640, {"L0": (8, 10), "L1": (16, 20), "L2": (32, 40), "L3": (64, 80)}),
    ("resnet50", 512, 640, {"layer1": (128, 160), "layer2": (64, 80), "layer3": (32, 40), "layer4": (16, 20)}),
    ("vit-l-14", 512, 640, {f"block{k}": (36, 45) for k in (6, 12, 18, 24)}),
    # sides that are not multiples: a padded conv net rounds up, a ViT patch grid rounds down
    ("resnet50", 225, 230, {"layer1": (57, 58), "layer2": (29, 29), "layer3": (15, 15), "layer4": (8, 8)}),
    ("vit-l-14", 230, 223, {f"block{k}": (16, 15) for k in (6, 12, 18, 24)}),
])
def test_level_grids_follow_the_input_size(variant, height, width, levels):
    bb = build(variant)
    x = torch.linspace(-1, 1, 3 * height * width).reshape(1, 3, height, width)
    dense = bb.image_features(x, kinds=("dense",)).dense
    assert {k: tuple(v.shape[-2:]) for k, v in dense.items()} == levels
    assert {k: s[1:] for k, s in bb.dense_shapes(height, width).items()} == levels


# -- determinism -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["tiny", "sd15-256", "vit-l-14"])
def test_an_images_bits_do_not_depend_on_batch_position_threads_or_precision(variant):
    """Alone, at position 2 of a batch of 3, with 1 or 2 threads, in fp32 or fp64: the same bytes."""
    bb = build(variant)
    others, image = images(2, seed=1), images(1, seed=2)[0]
    alone = bb.preprocess([image])
    batch = bb.preprocess([*others, image])
    assert torch.equal(batch[2:], alone)  # preprocessing is per image
    kinds = ("global", "dense")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_thread = as_bytes(bb.image_features(alone, kinds=kinds))
        torch.set_num_threads(2)
        two_threads = as_bytes(bb.image_features(alone, kinds=kinds))
        in_batch = bb.image_features(batch, kinds=kinds)
    finally:
        torch.set_num_threads(threads)
    at_2 = {k: v.numpy()[2:].tobytes() for k, v in in_batch.dense.items()}
    at_2["global"] = in_batch.global_.numpy()[2:].tobytes()
    fp64 = as_bytes(build(variant, dtype="fp64").image_features(alone, kinds=kinds))
    assert one_thread == two_threads == at_2 == fp64
    global_only = bb.image_features(alone, kinds=("global",))
    assert global_only.global_.numpy().tobytes() == one_thread["global"] and not global_only.dense


def test_different_images_differ_same_seed_same_other_seed_differs():
    x = build().preprocess(images(2))
    a = build().image_features(x, kinds=("global", "dense"))
    b = build().image_features(x, kinds=("global", "dense"))
    c = build(seed=1).image_features(x, kinds=("global", "dense"))
    assert as_bytes(a) == as_bytes(b)
    assert not torch.equal(a.global_[0], a.global_[1])
    assert all(not torch.equal(v[0], v[1]) for v in a.dense.values())
    assert not torch.equal(a.global_, c.global_)


def test_features_carry_image_signal():
    """Brighter images give different pooled features than darker ones; a constant image gives constant maps."""
    bb = build()
    dark, bright = (Image.new("RGB", (40, 40), (v, v, v)) for v in (20, 235))
    out = bb.image_features(bb.preprocess([dark, bright]), kinds=("global", "dense"))
    assert not torch.equal(out.global_[0], out.global_[1])
    for v in out.dense.values():  # every cell of a constant image sees the same statistics
        assert torch.equal(v[0], v[0][:, :1, :1].expand_as(v[0]))


def test_preprocess_is_an_affine_normalisation_per_image():
    """Constant images read back the fixed mean/std (what the OVSS task's Normaliser relies on)."""
    from tasks.ovss.task import Normaliser

    bb = build()
    grey = Image.new("L", (50, 30), 128)
    x = bb.preprocess([grey])
    assert x.shape == (1, 3, 32, 32)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(x[0, :, 5, 5], (128 / 255 - mean) / std)
    norm = Normaliser(bb)
    torch.testing.assert_close(norm.lo.flatten(), -mean / std)


# -- neck ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["tiny", "sd15-256"])
def test_neck_trains_on_a_dense_batch_and_is_seeded(variant):
    bb = build(variant)
    frozen = bb.image_features(bb.preprocess(images(3)), kinds=("dense",)).dense
    dense = {k: v.clone() for k, v in frozen.items()}  # as a task's feature store hands them out
    rng_before = torch.random.get_rng_state()
    neck = bb.neck(seed=7)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the caller's RNG is untouched
    same, other, default = bb.neck(seed=7), bb.neck(seed=8), bb.neck()
    state = neck.state_dict()
    assert all(torch.equal(v, same.state_dict()[k]) for k, v in state.items())
    assert not all(torch.equal(v, other.state_dict()[k]) for k, v in state.items())
    assert all(torch.equal(v, build(variant, seed=7).neck().state_dict()[k]) for k, v in state.items())
    assert not all(torch.equal(v, default.state_dict()[k]) for k, v in state.items())  # config seed 0
    assert all(p.dtype == torch.float32 for p in neck.parameters())
    out = neck(dense)
    assert out.shape == (3, 256)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in neck.parameters())
    assert not hasattr(bb, "dense_neck")  # OVSS uses its generic FPN head


# -- weights, fingerprint, dtypes -----------------------------------------------------------------------------

def test_fingerprint_is_marked_synthetic_and_follows_variant_and_seed():
    from harness.data.weights import resolve_weights

    cls = BACKBONES.get("synthetic")
    fps = {(v, s): build(v, seed=s).fingerprint() for v in ("tiny", "sd15-256") for s in (0, 1)}
    assert all(fp["synthetic"] is True and fp["backbone"] == "synthetic" for fp in fps.values())
    assert all(fp["weights_kind"] == "random" for fp in fps.values())
    assert len({json.dumps(fp, sort_keys=True) for fp in fps.values()}) == 4
    assert fps[("tiny", 1)]["weights"] == resolve_weights("random", seed=1).fingerprint
    assert cls.weights_fingerprint(cfg(seed=1)) == resolve_weights("random", seed=1).fingerprint
    assert build(dtype="fp64").fingerprint()["dtype"] == "fp64"


def test_weights_other_than_random_are_refused():
    cls = BACKBONES.get("synthetic")
    with pytest.raises(ConfigError, match="synthetic"):
        build(weights="timm/resnet50.a1_in1k")
    with pytest.raises(ConfigError, match="no weights"):
        cls.weights_fingerprint(cfg(weights="/some/file.safetensors"))
    assert build(weights="random").weights.kind == "random"


def test_dtypes():
    x = build().preprocess(images(1))
    out = build(dtype="bf16").image_features(x, kinds=("global", "dense"))
    assert out.global_.dtype == torch.float32 and all(v.dtype == torch.float32 for v in out.dense.values())
    bb = build()
    assert not any(p.requires_grad for p in bb.model.parameters()) and not bb.model.training
    with pytest.raises(ConfigError):
        build(dtype="fp8")
    with pytest.raises(HarnessError, match="feature kind"):
        bb.image_features(x, kinds=("tokens",))
    with pytest.raises(HarnessError, match=r"\[B, 3, H, W\]"):
        bb.image_features(x[:, :1])


# -- end to end ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_run_names_the_synthetic_row(tmp_path):
    """`harness run --backbone synthetic --variant tiny` on one FSC text-classifier point (the neck trains on
    the dense levels): the records, the leaderboard files and a leaderboard compiled from the records all
    name `synthetic:tiny`."""
    import pandas as pd

    from harness.report.leaderboard import runs_to_long
    from harness.track.tracking import runs_from_records

    suite = tmp_path / "synth.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "synth", "variant": "tiny", "device": "cpu", "batch_size": 32,
        "entries": [{"task": "fsc", "datasets": ["mini_coop"],
                     "protocol": {"text_space": "clip:tiny", "epochs": 2, "train_batch_size": 32, "lr": 1.0e-3},
                     "grid": {"head": ["text-classifier"], "shots": [1], "seed": [1]}}]}, sort_keys=False))
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--backbone", "synthetic", "--variant", "tiny",
                           "--suite", str(suite)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 job(s) ran" in proc.stderr
    [record] = [json.loads(p.read_text()) for p in (tmp_path / "home" / "records").glob("*.json")]
    assert record["backbone"]["name"] == "synthetic" and record["backbone_fingerprint"]["synthetic"] is True
    assert record["details"]["uses_neck"] is True
    label = "synthetic:tiny (random init)"
    assert label in proc.stdout
    assert list(pd.read_csv(tmp_path / "home" / "leaderboards" / "synth.csv")["backbone"].unique()) == [label]
    assert list(runs_to_long(runs_from_records("synth"))["backbone"].unique()) == [label]
