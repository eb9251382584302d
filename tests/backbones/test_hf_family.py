"""`hf:<hub id or folder>`: any transformers vision encoder, built through AutoConfig / AutoModel /
AutoImageProcessor from what the weights resolver found, on the real CLI; features checked against the
transformers model called directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from backbone_helpers import backbone_cfg, fsc_slice, harness_cli, random_images
from transformers import (
    BitImageProcessor,
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    SiglipImageProcessor,
    SiglipVisionConfig,
    SiglipVisionModel,
    SwinConfig,
    SwinModel,
)

from harness.catalog import BACKBONES
from harness.config import RunConfig
from harness.errors import ConfigError, WeightsMissingError
from harness.plan.planner import plan
from harness.plan.suites import load_suite


def tiny_dinov2(folder: Path) -> Dinov2Model:
    torch.manual_seed(3)
    model = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                     image_size=56, patch_size=14)).eval()
    model.save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56}, do_center_crop=True,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return model


def tiny_vision_tower(model_cls, config_cls, processor, seed: int):
    """A saver of a tiny CLIP-style vision tower (32 px, 8 px patches) and its image processor."""
    def save(folder: Path):
        torch.manual_seed(seed)
        model = model_cls(config_cls(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, image_size=32, patch_size=8)).eval()
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        return model
    return save


tiny_clip_vision = tiny_vision_tower(CLIPVisionModel, CLIPVisionConfig, CLIPImageProcessor(
    size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), seed=4)
tiny_siglip_vision = tiny_vision_tower(SiglipVisionModel, SiglipVisionConfig, SiglipImageProcessor(
    size={"height": 32, "width": 32}), seed=5)


def built(folder: Path, **kw):
    cls = BACKBONES.get(f"hf:{folder}")
    return cls(backbone_cfg(cls.name, variant="default", **kw))


# side: the processor's output size; prefix: tokens before the patch tokens (a class token; SigLIP has none).
@pytest.mark.parametrize(("save", "side", "prefix"), [(tiny_dinov2, 56, 1), (tiny_clip_vision, 32, 1),
                                                      (tiny_siglip_vision, 32, 0)],
                         ids=["dinov2", "clip-vision", "siglip-vision"])
def test_a_saved_model_runs_the_mini_fsc_entry_through_the_cli_and_matches_transformers(tmp_path, save, side,
                                                                                        prefix):
    folder = tmp_path / "model"
    model = save(folder)
    proc = harness_cli(["run", "-b", f"hf:{folder}", "--suite", str(fsc_slice(tmp_path / "s.yaml", "hffsc")),
                        "--out-dir", str(tmp_path / "lb")], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    board = pd.read_csv(tmp_path / "lb" / "hffsc.csv")
    assert list(board["backbone"].unique()) == [f"hf:{folder}:default"]
    bb = built(folder)
    x = bb.preprocess(random_images())
    assert x.shape == (3, 3, side, side)
    with torch.inference_mode():
        out = model(pixel_values=x)
    feats = bb.image_features(x, kinds=("global", "dense"))
    # DINOv2: the normed class token; CLIP's vision tower: its post-layernorm class token; SigLIP: its attention pool.
    torch.testing.assert_close(feats.global_, out.pooler_output, atol=1e-5, rtol=0)
    grid = side // model.config.patch_size
    assert out.last_hidden_state.shape[1] == prefix + grid * grid
    patches = out.last_hidden_state[:, prefix:].transpose(1, 2).reshape(3, 32, grid, grid)
    torch.testing.assert_close(feats.dense["last"], patches, atol=1e-5, rtol=0)


def test_random_weights_are_seeded_and_fingerprinted_apart(tmp_path):
    tiny_dinov2(tmp_path / "d")
    x = built(tmp_path / "d").preprocess(random_images())
    a, b = (built(tmp_path / "d", weights="random", seed=s).image_features(x).global_ for s in (0, 0))
    c = built(tmp_path / "d", weights="random", seed=1).image_features(x).global_
    assert torch.equal(a, b) and not torch.allclose(a, c)
    trained = built(tmp_path / "d")
    assert trained.weights.fingerprint.startswith("sha256:") and not np.allclose(
        trained.image_features(x).global_.numpy(), a.numpy())


def test_a_hierarchical_model_is_global_only_and_refused_for_ovss(tmp_path):
    SwinModel(SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 1],
                         window_size=4)).save_pretrained(tmp_path / "swin")
    name = f"hf:{tmp_path / 'swin'}"
    assert BACKBONES.get(name).feature_kinds == ("global",)
    with pytest.raises(ConfigError, match="no dense features, which task 'ovss' needs"):
        plan(RunConfig(suite="mini", backbones=[name]), load_suite("mini"))


def test_a_missing_source_is_one_line_with_the_download_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(WeightsMissingError, match="hf download facebook/dinov2-smallx"):
        BACKBONES.get("hf:facebook/dinov2-smallx")


def test_a_full_clip_model_gives_its_projected_image_embedding_in_one_pass(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(5)
    tower = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    model = CLIPModel(CLIPConfig(text_config=tower, vision_config={**tower, "image_size": 32, "patch_size": 8},
                                 projection_dim=16)).eval()
    model.save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        tmp_path / "clip")
    bb = built(tmp_path / "clip")
    x = bb.preprocess(random_images())
    with torch.inference_mode():
        reference = model.get_image_features(pixel_values=x)
    reference = getattr(reference, "pooler_output", reference)  # newer transformers wrap it in an output
    assert reference.shape == (3, 16)
    torch.testing.assert_close(bb.image_features(x).global_, reference, atol=1e-5, rtol=0)
