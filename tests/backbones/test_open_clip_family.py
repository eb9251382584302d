"""`open_clip:<arch>[/<tag>]`: any open_clip model by name, built and loaded through the `clip` backbone's code
path, on the real CLI; features checked against open_clip called directly."""

from __future__ import annotations

import copy
import json
import types
from pathlib import Path

import open_clip
import pandas as pd
import pytest
import torch
from backbone_helpers import backbone_cfg, fsc_slice, harness_cli, random_images
from open_clip.model import set_model_preprocess_cfg
from open_clip.push_to_hf_hub import save_for_hf
from open_clip.transform import PreprocessCfg, merge_preprocess_dict

from harness.catalog import BACKBONES
from harness.config import RunConfig
from harness.errors import HarnessError, UnknownNameError
from harness.plan.planner import plan
from harness.plan.suites import load_suite

# A small open_clip config (open_clip's model_configs/*.json format): 64 px ViT, 2 blocks; 1-block text tower
# with CLIP's BPE vocabulary, so the stock tokenizer fits. Run under a registered base arch name (ViT-S-32): the
# weights' open_clip_config.json carries this config, which the family builds instead (open_clip's hf-hub rule).
SMALL_CFG = {"embed_dim": 32,
             "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
ARCH = "ViT-S-32"
NAME = f"open_clip:{ARCH}"


def small_model(seed: int) -> torch.nn.Module:
    """The small model made by open_clip directly, with the preprocess cfg its factory would attach."""
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**copy.deepcopy(SMALL_CFG)).eval()
    set_model_preprocess_cfg(model, merge_preprocess_dict(PreprocessCfg(), {"size": model.visual.image_size}))
    return model


def save_open_clip(model: torch.nn.Module, folder: Path) -> Path:
    """open_clip's own hub-layout writer (open_clip_model.safetensors + open_clip_config.json). It also saves a
    tokenizer, which only HF tokenizers can do: the stock BPE tokenizer ships with open_clip, so a no-op."""
    save_for_hf(model, types.SimpleNamespace(save_pretrained=lambda dest: None), SMALL_CFG, folder)
    return folder


def test_an_open_clip_folder_runs_the_mini_fsc_entry_through_the_cli_and_matches_open_clip(tmp_path):
    model = small_model(seed=7)
    folder = save_open_clip(model, tmp_path / "small")
    suite = fsc_slice(tmp_path / "s.yaml", "oclipfsc")
    proc = harness_cli(["run", "-b", NAME, "--weights", str(folder), "--suite", str(suite),
                        "--out-dir", str(tmp_path / "lb")], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    board = pd.read_csv(tmp_path / "lb" / "oclipfsc.csv")
    assert list(board["backbone"].unique()) == [f"{NAME}:default"]
    assert board.loc[0, "metric"] == "top1" and 0 <= board.loc[0, "mean"] <= 100

    # The class the run built, from the same folder: open_clip's own transform and forward give the same.
    bb = BACKBONES.get(NAME)(backbone_cfg(NAME, variant="default", weights=str(folder)))
    ims = random_images()
    transform = open_clip.image_transform(64, is_train=False)  # open_clip's defaults: OpenAI mean/std, bicubic
    x = bb.preprocess(ims)
    torch.testing.assert_close(x, torch.stack([transform(im) for im in ims]), atol=0, rtol=0)
    assert x.shape == (3, 3, 64, 64)
    with torch.inference_mode():
        direct_global = model.encode_image(x)
        direct_text = model.encode_text(open_clip.SimpleTokenizer(context_length=16)(["a cat", "a dog"]))
    torch.testing.assert_close(bb.image_features(x).global_, direct_global, atol=1e-5, rtol=0)
    torch.testing.assert_close(bb.text_features(["a cat", "a dog"]), direct_text, atol=1e-5, rtol=0)
    dense = bb.image_features(x, kinds=("dense",)).dense
    assert {k: tuple(v.shape) for k, v in dense.items()} == {"block1": (3, 64, 4, 4), "block2": (3, 64, 4, 4)}
    assert bb.feature_shapes(bb.config) == {"global": {"global": (32,)},
                                            "dense": {k: tuple(v.shape[1:]) for k, v in dense.items()}}
    assert bb.fingerprint()["model_cfg"] == SMALL_CFG


def test_the_tags_preprocessing_applies_where_the_weights_have_none(tmp_path):
    folder = save_open_clip(small_model(seed=1), tmp_path / "w")
    config_path = folder / "open_clip_config.json"
    saved = json.loads(config_path.read_text())
    # The weights' own preprocess_cfg wins over the tag's ...
    name = "open_clip:ViT-B-16-SigLIP/webli"
    bb = BACKBONES.get(name)(backbone_cfg(name, variant="default", weights=str(folder)))
    assert list(bb.preprocess_cfg["mean"]) == saved["preprocess_cfg"]["mean"] != [0.5] * 3
    assert bb.preprocess_cfg["resize_mode"] == saved["preprocess_cfg"]["resize_mode"] == "shortest"
    # ... and without one, the tag's (SigLIP/webli: squash resize, mean = std = 0.5, bicubic) applies.
    config_path.write_text(json.dumps({"model_cfg": saved["model_cfg"]}))
    bb = BACKBONES.get(name)(backbone_cfg(name, variant="default", weights=str(folder)))
    expected = open_clip.image_transform(64, is_train=False, mean=(0.5,) * 3, std=(0.5,) * 3,
                                         interpolation="bicubic", resize_mode="squash")
    ims = random_images(2, size=(100, 60))
    torch.testing.assert_close(bb.preprocess(ims), torch.stack([expected(im) for im in ims]), atol=0, rtol=0)


def test_names_resolve_lazily_with_tags_and_one_line_errors():
    cls = BACKBONES.get("open_clip:ViT-B-32/openai")
    assert cls is BACKBONES.get("open_clip:ViT-B-32/openai") and cls.name == "open_clip:ViT-B-32/openai"
    card = cls.variants["default"]
    assert (card.arch, card.weights, card.extra["pretrained_tag"]) == (
        "ViT-B-32", "timm/vit_base_patch32_clip_224.openai", "openai")
    assert "text" in card.extra["feature_kinds"] and cls.feature_kinds == ("global", "dense")
    assert BACKBONES.get("open_clip:ViT-B-32").variants["default"].weights == ""
    # A tag whose hub copy names a file: that file is looked for first.
    vitamin = BACKBONES.get("open_clip:ViTamin-S/datacomp1b")
    assert vitamin.variants["default"].weights == "jienengchen/ViTamin-S"
    assert vitamin.weight_filenames[0] == "pytorch_model.bin" and vitamin.feature_kinds == ("global",)
    assert "open_clip:ViT-B-32" not in BACKBONES.names()  # the family is listed, not its members
    with pytest.raises(UnknownNameError, match="unknown open_clip model 'ViT-B-33'; did you mean: ViT-B-32") as exc:
        BACKBONES.get("open_clip:ViT-B-33")
    assert "\n" not in str(exc.value)
    with pytest.raises(HarnessError, match="'ViT-B-32' has no pretrained tag 'opena'; its tags: openai, ") as exc:
        BACKBONES.get("open_clip:ViT-B-32/opena")
    assert "\n" not in str(exc.value) and "laion2b_s34b_b79k" in str(exc.value)


def test_two_models_or_two_weights_never_share_a_job_key(tmp_path):
    a_folder = save_open_clip(small_model(seed=1), tmp_path / "a")
    b_folder = save_open_clip(small_model(seed=2), tmp_path / "b")

    def keys(name: str, weights: str) -> set[str]:
        jobs = plan(RunConfig(suite="mini", backbones=[name], weights=weights), load_suite("mini")).jobs
        assert {j.backbone.variant for j in jobs} == {"default"}  # the suite's variant is not for a member
        return {j.key for j in jobs}

    a = keys(NAME, str(a_folder))
    assert a and a.isdisjoint(keys(NAME, str(b_folder)))
    assert a.isdisjoint(keys("open_clip:ViT-M-32", str(a_folder)))


def test_no_tag_and_no_weights_is_one_line_asking_for_weights():
    with pytest.raises(HarnessError, match=r"has no default weights .* pass --weights FILE\|FOLDER\|HUB_ID") as exc:
        plan(RunConfig(suite="mini", backbones=[NAME]), load_suite("mini"))
    assert "\n" not in str(exc.value)
    with pytest.raises(HarnessError, match="has no default weights"):
        BACKBONES.get(NAME)(backbone_cfg(NAME, variant="default"))


def test_a_missing_hub_copy_is_one_line_with_the_download_command(tmp_path):
    suite = fsc_slice(tmp_path / "s.yaml", "oclipfsc")
    proc = harness_cli(["run", "-b", "open_clip:ViT-B-32/openai", "--suite", str(suite)],
                       tmp_path, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "empty-hub"))
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "hf download timm/vit_base_patch32_clip_224.openai" in lines[0], proc.stderr


def test_a_family_members_text_tower_is_named_whole_in_a_text_space():
    from harness.data.text_space import parse_text_space
    from harness.errors import ConfigError

    assert parse_text_space("clip:vit-l-14") == ("clip", "vit-l-14")
    assert parse_text_space("open_clip:ViT-B-32/openai") == ("open_clip:ViT-B-32/openai", "default")
    assert parse_text_space("open_clip:ViT-B-32/openai:default") == ("open_clip:ViT-B-32/openai", "default")
    for bad in ("clip", "clip:", ":x"):
        with pytest.raises(ConfigError, match="text_space must look like"):
            parse_text_space(bad)
