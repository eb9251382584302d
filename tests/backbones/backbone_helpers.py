"""What the CLIP, DINO and ResNet backbone tests share: a config stand-in, random images, the HF hub cache
layout, a timm save, a hub load, and `BackboneContract`, the tests every backbone passes the same way (seeded
init, a round trip through its library's own save, fingerprints, bf16 autocast, foreign weights refused).
Imported as `from backbone_helpers import ...` (pytest puts this folder on the path).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file

from harness.catalog import BACKBONES
from harness.errors import HarnessError

ROOT = Path(__file__).resolve().parents[2]

REV = "fedcba9876543210fedcba9876543210fedcba98"


def backbone_cfg(name: str, **kw: Any) -> types.SimpleNamespace:
    """A stand-in for harness.config.BackboneConfig: the tiny variant, random weights, CPU, fp32, seed 0."""
    base = dict(name=name, variant="tiny", weights=None, device="cpu", dtype="fp32", batch_size=8, seed=0)
    return types.SimpleNamespace(**{**base, **kw})


def random_images(n: int = 3, size: tuple[int, int] = (100, 70), step: int = 9) -> list[Image.Image]:
    """`n` seeded random RGB images `size` (width, height), each `step` pixels taller than the one before."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size[1] + step * i, size[0], 3), dtype=np.uint8))
            for i in range(n)]


def fake_hf_cache(cache: Path, repo_id: str, files: dict[str, dict[str, torch.Tensor] | str], rev: str = REV) -> Path:
    """The HF hub cache layout: models--org--name/{refs/main, snapshots/<rev>/<file>} (text or a state dict)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, str):
            (snap / name).write_text(content)
        else:
            save_file(content, str(snap / name))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    return snap


def offline_hub(monkeypatch: pytest.MonkeyPatch, cache: Path) -> Path:
    """Point the HF hub at `cache`, offline."""
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def save_timm(model: torch.nn.Module, folder: Path, safe: bool = True) -> Path:
    """timm's own hub-layout writer (weights + config.json)."""
    timm.models.save_for_hf(model, folder, safe_serialization=safe)
    return folder


def timm_global(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The pooled pre-logits of a timm model, called directly."""
    with torch.inference_mode():
        return model.forward_head(model.forward_features(x), pre_logits=True)


def load_hub_weights(cls: type, cfg: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, cache: Path,
                     repo_id: str, files: dict[str, dict[str, torch.Tensor] | str]) -> Any:
    """The backbone built from `hf-hub:<repo_id>` in a fake offline hub cache holding `files`; the weights
    identity is `<repo_id>@<rev>`, with or without the `hf-hub:` prefix, built or not."""
    fake_hf_cache(cache, repo_id, files)
    offline_hub(monkeypatch, cache)
    bb = cls(cfg(weights=f"hf-hub:{repo_id}"))
    assert bb.weights.fingerprint == f"{repo_id}@{REV}" == bb.fingerprint()["weights"]
    assert cls.weights_fingerprint(cfg(weights=repo_id)) == f"{repo_id}@{REV}"
    return bb


class BackboneContract:
    """Tests every backbone passes the same way. A test module subclasses it (or `TimmContract`) as
    `TestContract` and names its backbone, a tiny model made by the library directly, how the library saves it
    and computes the global embedding, and a state dict of another architecture."""

    backbone: ClassVar[type]
    weight_files: ClassVar[tuple[str, str]]  # what `save_tiny` writes: (safetensors, pickle)
    # Functions, set as staticmethods: `direct_tiny(seed)`, the tiny model made by the library directly;
    # `save_tiny(model, folder, safe)`, the library's own save (-> folder); `reference_global(model, x)`, the
    # library's global embedding; `other_architecture()`, a state dict the backbone must refuse.
    direct_tiny: ClassVar[Callable[[int], torch.nn.Module]]
    save_tiny: ClassVar[Callable[[torch.nn.Module, Path, bool], Path]]
    reference_global: ClassVar[Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]]
    other_architecture: ClassVar[Callable[[], dict[str, torch.Tensor]]]
    images = staticmethod(random_images)

    def cfg(self, **kw: Any) -> types.SimpleNamespace:
        return backbone_cfg(self.backbone.name, **kw)

    def test_registered_lazily(self):
        assert BACKBONES.get(self.backbone.name) is self.backbone

    def test_same_seed_same_features_other_seed_differs(self):
        x = self.backbone(self.cfg()).preprocess(self.images())
        a = self.backbone(self.cfg()).image_features(x).global_
        b = self.backbone(self.cfg()).image_features(x).global_
        c = self.backbone(self.cfg(seed=1)).image_features(x).global_
        assert torch.equal(a, b)
        assert not torch.allclose(a, c)

    @pytest.mark.parametrize("safe", [True, False])
    def test_library_save_round_trip(self, tmp_path, safe):
        """The library's own save loads as a sha256-fingerprinted file, and gives the library's embedding."""
        model = self.direct_tiny(seed=123)
        bb = self.backbone(self.cfg(weights=str(self.save_tiny(model, tmp_path / "w", safe))))
        assert bb.weights.kind == "file" and bb.weights.fingerprint.startswith("sha256:")
        assert bb.weights.path.name == self.weight_files[0 if safe else 1]
        assert bb.param_count == bb.card.extra["params"]
        x = bb.preprocess(self.images())
        side = bb.card.extra["resolution"]
        assert x.shape == (3, 3, side, side) and x.dtype == torch.float32  # non-square images come out square
        torch.testing.assert_close(bb.image_features(x).global_, self.reference_global(model, x), atol=1e-5, rtol=0)
        both = bb.image_features(x, kinds=("global", "dense"))
        torch.testing.assert_close(both.global_, self.reference_global(model, x), atol=1e-5, rtol=0)

    def test_fingerprint_follows_the_weights(self, tmp_path):
        """Only the weights identity differs between two weight files; each fingerprint is JSON (it goes into
        records and cache keys)."""
        folders = [self.save_tiny(self.direct_tiny(seed), tmp_path / str(seed), True) for seed in (1, 2)]
        a, b = (self.backbone(self.cfg(weights=str(folder))).fingerprint() for folder in folders)
        r = self.backbone(self.cfg()).fingerprint()
        assert a["weights"] != b["weights"] and r["weights"] == "random(seed=0,init=v2)"
        assert {k: v for k, v in a.items() if k != "weights"} == {k: v for k, v in b.items() if k != "weights"}
        for fp in (a, b, r):
            json.dumps(fp)

    def test_wrong_architecture_names_the_file(self, tmp_path):
        path = tmp_path / "other.safetensors"
        save_file(self.other_architecture(), str(path))
        with pytest.raises(HarnessError, match=str(path)):
            self.backbone(self.cfg(weights=str(path)))

    def test_bf16_autocast_on_cpu_returns_fp32_and_frozen(self):
        """Under bf16 autocast every feature still comes back fp32; the model is frozen; unknown kinds are
        refused."""
        bb = self.backbone(self.cfg(dtype="bf16"))
        x = bb.preprocess(self.images(1))
        out = bb.image_features(x, kinds=("global", "dense"))
        assert out.global_.dtype == torch.float32 and out.dense
        assert all(m.dtype == torch.float32 for m in out.dense.values())
        assert not any(p.requires_grad for p in bb.model.parameters()) and not bb.model.training
        with pytest.raises(HarnessError, match="feature kind"):
            bb.image_features(x, kinds=("tokens",))


class TimmContract(BackboneContract):
    """The contract for a timm backbone: timm's own save (`save_for_hf`), its pooled pre-logits."""

    weight_files = ("model.safetensors", "pytorch_model.bin")
    save_tiny = staticmethod(save_timm)
    reference_global = staticmethod(timm_global)


def harness_cli(args: list[str], tmp: Path, **env: str) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess, with its own home, cache and data under `tmp`."""
    environ = {**os.environ, "HARNESS_HOME": str(tmp / "home"), "HARNESS_CACHE": str(tmp / "cache"),
               "HARNESS_DATA": str(tmp / "data"), "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=environ,
                          cwd=tmp, timeout=600)


def fsc_slice(path: Path, name: str) -> Path:
    """The mini suite's FSC entry, one linear-probe point, as suite `name` (its leaderboard is `<name>.csv`)."""
    spec = yaml.safe_load((ROOT / "harness" / "suites" / "mini.yaml").read_text())
    fsc = next(e for e in spec["entries"] if e["task"] == "fsc")
    spec.update(name=name, entries=[{**fsc, "grid": {"head": ["linear-probe"], "shots": [1], "seed": [1]}}])
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
