"""`timm:<model>`: any timm model by name, built and loaded through the same code path as the built-ins, on the
real CLI; features checked against timm called directly."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import timm
import torch
from backbone_helpers import backbone_cfg, fsc_slice, harness_cli, random_images, save_timm, timm_global

from harness.catalog import BACKBONES
from harness.config import RunConfig
from harness.errors import ConfigError, UnknownNameError
from harness.plan.planner import plan
from harness.plan.suites import load_suite


def tiny_convnext_folder(folder: Path) -> tuple[torch.nn.Module, Path]:
    """A seeded random convnext_atto saved by timm itself, its preprocessing at 64 px (config.json)."""
    torch.manual_seed(7)
    model = timm.create_model("convnext_atto", pretrained=False).eval()
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 64, 64), "crop_pct": 1.0}
    return model, save_timm(model, folder)


def test_a_timm_folder_runs_the_mini_fsc_entry_through_the_cli_and_matches_timm(tmp_path):
    model, folder = tiny_convnext_folder(tmp_path / "convnext_atto")
    proc = harness_cli(["run", "-b", "timm:convnext_atto", "--weights", str(folder), "--suite",
                        str(fsc_slice(tmp_path / "s.yaml", "timmfsc")), "--out-dir", str(tmp_path / "lb")], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    board = pd.read_csv(tmp_path / "lb" / "timmfsc.csv")
    assert list(board["backbone"].unique()) == ["timm:convnext_atto:default"]
    assert board.loc[0, "metric"] == "top1" and 0 <= board.loc[0, "mean"] <= 100
    # The class the run built, from the same folder: timm's own forward gives the same global features.
    bb = BACKBONES.get("timm:convnext_atto")(backbone_cfg("timm:convnext_atto", variant="default",
                                                          weights=str(folder)))
    x = bb.preprocess(random_images())
    assert x.shape == (3, 3, 64, 64)
    torch.testing.assert_close(bb.image_features(x).global_, timm_global(model, x), atol=1e-5, rtol=0)
    dense = bb.image_features(x, kinds=("dense",)).dense
    with torch.inference_mode():
        direct = model.forward_intermediates(x, indices=4, intermediates_only=True)
    assert list(dense) == ["stages_0", "stages_1", "stages_2", "stages_3"]
    for ours, theirs in zip(dense.values(), direct, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert {k: v for k, v in bb.feature_shapes(bb.config)["dense"].items()} == {
        k: tuple(v.shape[1:]) for k, v in dense.items()}


def test_names_resolve_lazily_with_tags_and_one_line_errors():
    cls = BACKBONES.get("timm:resnet18.a1_in1k")
    assert cls is BACKBONES.get("timm:resnet18.a1_in1k") and cls.name == "timm:resnet18.a1_in1k"
    assert cls.variants["default"].weights == "timm/resnet18.a1_in1k"
    assert BACKBONES.get("timm:resnet18").variants["default"].arch == "resnet18"
    assert "timm:resnet18" not in BACKBONES.names()  # the family is listed, not its members
    with pytest.raises(UnknownNameError, match="did you mean: resnet18"):
        BACKBONES.get("timm:resnet181")
    with pytest.raises(UnknownNameError, match="timm:<name>"):
        BACKBONES.get("timx:resnet18")


def test_two_models_or_two_weights_never_share_a_job_key():
    def keys(name: str, weights: str) -> set[str]:
        run = RunConfig(suite="mini", backbones=[name], weights=weights)
        return {j.key for j in plan(run, load_suite("mini")).jobs}

    a, b = keys("timm:resnet18", "random"), keys("timm:resnet34", "random")
    assert a and a.isdisjoint(b)
    assert a.isdisjoint(keys("timm:resnet18.tv_in1k", "random"))  # another name, another row


def test_the_suite_variant_does_not_apply_to_a_family_member():
    jobs = plan(RunConfig(suite="mini", backbones=["timm:resnet18"], weights="random"), load_suite("mini")).jobs
    assert {j.backbone.variant for j in jobs} == {"default"} and {j.task for j in jobs} == {"fsc", "sbir", "ovss"}


def test_a_global_only_model_is_refused_for_a_dense_task_at_planning(monkeypatch):
    cls = BACKBONES.get("timm:resnet18")
    monkeypatch.setattr(cls, "feature_kinds", ("global",))
    with pytest.raises(ConfigError, match="no dense features, which task 'ovss' needs"):
        plan(RunConfig(suite="mini", backbones=["timm:resnet18"], weights="random"), load_suite("mini"))


def test_a_missing_hub_copy_is_one_line_with_the_download_command(tmp_path):
    suite = fsc_slice(tmp_path / "s.yaml", "timmfsc")
    proc = harness_cli(["run", "-b", "timm:resnet18", "--suite", str(suite)], tmp_path,
                       HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "empty-hub"))
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "hf download timm/resnet18.a1_in1k" in lines[0], proc.stderr
