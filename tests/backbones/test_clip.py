"""The open_clip CLIP backbone: the backbone contract (open_clip's own save/load round trips...), preprocessing,
hub loads, dense shapes, text tower, cards."""

from __future__ import annotations

import copy
import functools
import types
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from backbone_helpers import BackboneContract, backbone_cfg, load_hub_weights, offline_hub
from backbone_helpers import random_images as images
from open_clip.model import set_model_preprocess_cfg
from open_clip.push_to_hf_hub import save_for_hf
from open_clip.transform import PreprocessCfg, merge_preprocess_dict

from backbones.cards import CLIP
from backbones.clip import CLIPBackbone, dense_block_indices
from harness.errors import WeightsMissingError

TINY_CFG = CLIP["tiny"].extra["model_cfg"]
TEXTS = ["a photo of a cat.", "a drawing of a dog", ""]
# A 4-stage ModifiedResNet CLIP (the RN50 family) small enough for a unit test.
RN_CFG = {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16},
          "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}

cfg = functools.partial(backbone_cfg, "clip")


def direct_tiny(seed: int, model_cfg: dict = TINY_CFG) -> torch.nn.Module:
    """The tiny model made by open_clip directly, with the preprocess cfg its factory would attach."""
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**copy.deepcopy(model_cfg)).eval()
    set_model_preprocess_cfg(model, merge_preprocess_dict(PreprocessCfg(), {"size": model.visual.image_size}))
    return model


def save_open_clip(model: torch.nn.Module, folder: Path, safe: bool | str = True, model_cfg: dict = TINY_CFG) -> Path:
    """open_clip's own hub-layout writer (weights + open_clip_config.json). It also saves a tokenizer, which
    only HF tokenizers can do: the stock BPE tokenizer ships with open_clip, so a no-op stands in."""
    save_for_hf(model, types.SimpleNamespace(save_pretrained=lambda dest: None), model_cfg, folder,
                safe_serialization=safe)
    return folder


def encode_image(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.encode_image(x)


class TestContract(BackboneContract):
    backbone = CLIPBackbone
    weight_files = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    direct_tiny = staticmethod(direct_tiny)
    save_tiny = staticmethod(save_open_clip)
    reference_global = staticmethod(encode_image)
    other_architecture = staticmethod(lambda: direct_tiny(0, RN_CFG).state_dict())


def test_default_variant():
    assert CLIPBackbone.default_variant == "vit-b-16" and CLIP["vit-b-16"].arch == "ViT-B-16"


def test_preprocess_is_open_clips_eval_transform(tmp_path):
    model = direct_tiny(seed=0)
    with torch.device("meta"):  # open_clip's factory for a 64 px model: the transform, without the weights
        _, _, preprocess_val = open_clip.create_model_and_transforms(
            "ViT-B-16", pretrained=None, force_image_size=64, device="meta")
    bb = CLIPBackbone(cfg())
    ims = images() + [images(1)[0].convert("L")]
    expected = torch.stack([preprocess_val(im) for im in ims])
    torch.testing.assert_close(bb.preprocess(ims), expected, atol=0, rtol=0)
    assert bb.preprocess_cfg == model.visual.preprocess_cfg


def test_hub_cache_round_trip_picks_the_open_clip_file(tmp_path, monkeypatch):
    model = direct_tiny(seed=5)
    folder = save_open_clip(model, tmp_path / "saved", safe=True)
    from safetensors.torch import load_file

    bb = load_hub_weights(CLIPBackbone, cfg, monkeypatch, tmp_path / "hub", "org/tiny-clip", {
        # A timm/*.openai repo also holds a timm-format model.safetensors: it must not be chosen.
        "model.safetensors": {"visual.trunk.pos_embed": torch.zeros(1)},
        "open_clip_model.safetensors": load_file(str(folder / "open_clip_model.safetensors")),
        "open_clip_config.json": (folder / "open_clip_config.json").read_text(),
    })
    assert bb.weights.path.name == "open_clip_model.safetensors"
    x = bb.preprocess(images())
    torch.testing.assert_close(bb.image_features(x).global_, encode_image(model, x), atol=1e-5, rtol=0)


def test_dense_shapes_layout_and_two_resolutions(tmp_path):
    model = direct_tiny(seed=3)
    bb = CLIPBackbone(cfg(weights=str(save_open_clip(model, tmp_path / "w"))))
    assert bb.dense_levels == CLIP["tiny"].extra["dense_levels"] == ("block1", "block2")
    x = bb.preprocess(images(2))
    dense = bb.image_features(x, kinds=("dense",))
    assert dense.global_ is None
    assert {k: tuple(v.shape) for k, v in dense.dense.items()} == {"block1": (2, 64, 4, 4), "block2": (2, 64, 4, 4)}

    # Independent of forward_intermediates: forward hooks on the resblocks (batch-first [B, 1 + HW, C] in
    # open_clip 3), final LayerNorm, class token dropped, tokens row-major over the grid.
    captured = []
    hooks = [blk.register_forward_hook(lambda mod, inp, out: captured.append(out))
             for blk in model.visual.transformer.resblocks]
    encode_image(model, x)
    for h in hooks:
        h.remove()
    for name, tokens in zip(("block1", "block2"), captured, strict=True):
        with torch.inference_mode():
            expected = model.visual.ln_post(tokens)[:, 1:].reshape(2, 4, 4, 64).permute(0, 3, 1, 2)
        torch.testing.assert_close(dense.dense[name], expected, atol=1e-5, rtol=0)

    for h, w in ((96, 96), (64, 96), (96, 48)):  # another resolution, and non-square inputs
        feats = bb.image_features(torch.randn(2, 3, h, w), kinds=("global", "dense"))
        assert {tuple(v.shape) for v in feats.dense.values()} == {(2, 64, h // 16, w // 16)}
        assert feats.global_.shape == (2, 64)


def test_other_input_size_matches_open_clip_at_that_image_size(tmp_path):
    """Off the native size, the result is open_clip's model created at that size from the same checkpoint."""
    model = direct_tiny(seed=4)
    folder = save_open_clip(model, tmp_path / "w")
    bb = CLIPBackbone(cfg(weights=str(folder)))
    x = torch.randn(2, 3, 64, 96)
    at_size = copy.deepcopy(TINY_CFG)
    at_size["vision_cfg"]["image_size"] = (64, 96)
    torch.manual_seed(0)
    other = open_clip.model.CLIP(**at_size).eval()
    open_clip.load_checkpoint(other, str(folder / "open_clip_model.safetensors"))  # resizes the pos embedding
    torch.testing.assert_close(bb.image_features(x).global_, encode_image(other, x), atol=1e-5, rtol=0)
    torch.testing.assert_close(bb.image_features(x, kinds=("global", "dense")).global_, encode_image(other, x),
                               atol=1e-5, rtol=0)
    # The native tower is untouched.
    x64 = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(bb.image_features(x64).global_, encode_image(model, x64), atol=1e-5, rtol=0)


def test_modified_resnet_stages(tmp_path, monkeypatch):
    card = CLIP["tiny"].__class__(name="tiny-rn", arch="tiny-rn", weights="random", extra={"model_cfg": RN_CFG})
    monkeypatch.setitem(CLIPBackbone.variants, "tiny-rn", card)
    model = direct_tiny(seed=2, model_cfg=RN_CFG)
    bb = CLIPBackbone(cfg(variant="tiny-rn", weights=str(save_open_clip(model, tmp_path / "w", model_cfg=RN_CFG))))
    assert bb.dense_levels == ("layer1", "layer2", "layer3", "layer4")
    x = bb.preprocess(images(2))
    both = bb.image_features(x, kinds=("global", "dense"))
    torch.testing.assert_close(both.global_, encode_image(model, x), atol=1e-5, rtol=0)
    torch.testing.assert_close(bb.image_features(x).global_, encode_image(model, x), atol=1e-5, rtol=0)
    assert [tuple(m.shape) for m in both.dense.values()] == [(2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4),
                                                             (2, 512, 2, 2)]
    odd = bb.image_features(torch.randn(2, 3, 96, 160), kinds=("global", "dense"))  # attention pool resized
    assert odd.global_.shape == (2, 32) and odd.dense["layer4"].shape == (2, 512, 3, 5)
    assert bb.text_features(["a cat"]).shape == (1, 32)


def test_text_features_and_prompt_embeddings(tmp_path):
    model = direct_tiny(seed=7)
    bb = CLIPBackbone(cfg(weights=str(save_open_clip(model, tmp_path / "w"))))
    tokenizer = open_clip.SimpleTokenizer(context_length=TINY_CFG["text_cfg"]["context_length"])
    with torch.inference_mode():
        expected = model.encode_text(tokenizer(TEXTS))
    got = bb.text_features(TEXTS)
    assert got.shape == (3, 64) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert bb.text_features([]).shape == (0, 64)

    classes, templates = ["cat", "dog", "red panda"], ["a photo of a {}.", "a drawing of a {}.", "{}"]
    emb = bb.prompt_embeddings(classes, templates)
    assert emb.shape == (3, 64)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    manual = torch.stack([F.normalize(F.normalize(bb.text_features([t.format(c) for t in templates]), dim=-1)
                                      .mean(0), dim=0) for c in classes])
    torch.testing.assert_close(emb, manual, atol=1e-5, rtol=0)
    torch.testing.assert_close(bb.prompt_embeddings(classes, [lambda c: f"a photo of a {c}."]),
                               bb.prompt_embeddings(classes, ["a photo of a {}."]))


def test_missing_hub_weights_offline_names_id_and_command(tmp_path, monkeypatch):
    offline_hub(monkeypatch, tmp_path / "hub")
    for call in (lambda: CLIPBackbone(cfg(variant="vit-b-16")),
                 lambda: CLIPBackbone.weights_fingerprint(cfg(variant=None))):
        with pytest.raises(WeightsMissingError) as err:
            call()
        msg = str(err.value)
        assert "timm/vit_base_patch16_clip_224.openai" in msg
        assert "hf download timm/vit_base_patch16_clip_224.openai" in msg


def test_fingerprint_keys():
    fp = CLIPBackbone(cfg()).fingerprint()
    assert fp["input_size"] == [3, 64, 64] and fp["quick_gelu"] is False and fp["model_cfg"] == TINY_CFG


def test_quick_gelu_rule():
    """OpenAI weights need QuickGELU (open_clip keeps it in the `openai` tag, not in the ViT-B-16 config)."""
    bb = CLIPBackbone.__new__(CLIPBackbone)
    bb.card = CLIP["vit-b-16"]
    bb.config = cfg(variant="vit-b-16")
    assert bb._quick_gelu({}) is True
    assert bb._quick_gelu({"model_cfg": {"embed_dim": 512}}) is True  # the card's own weights: the tag decides
    bb.config = cfg(variant="vit-b-16", weights="laion/other")
    assert bb._quick_gelu({"model_cfg": {"embed_dim": 512}}) is False  # other weights: their own config
    assert bb._quick_gelu({"model_cfg": {"quick_gelu": True}}) is True
    assert bb._quick_gelu({}) is True  # a bare file: the tag


def test_bf16_autocast_text_features_are_fp32():
    assert CLIPBackbone(cfg(dtype="bf16")).text_features(["a cat"]).dtype == torch.float32


@pytest.mark.parametrize("variant", sorted(CLIP))
def test_cards_match_the_architecture(variant):
    """Card facts (resolution, parameter count, widths, dense levels) checked against open_clip's model,
    built on the meta device for the big variants (no memory, no init cost)."""
    card = CLIP[variant]
    if "model_cfg" in card.extra:
        model = direct_tiny(0)
    else:
        with torch.device("meta"):
            model = open_clip.create_model(card.arch, pretrained=None, device="meta")
        assert open_clip.get_pretrained_cfg(card.arch, card.extra["pretrained_tag"])["hf_hub"].rstrip("/") \
            == card.weights
    visual = model.visual
    size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    assert card.extra["resolution"] == size
    assert card.extra["params"] == sum(p.numel() for p in model.parameters())
    assert card.extra["params_visual"] == sum(p.numel() for p in visual.parameters())
    assert card.extra["embed_dim"] == visual.output_dim
    assert set(card.extra["feature_kinds"]) == {*CLIPBackbone.feature_kinds, "text"}
    if hasattr(visual, "transformer"):
        depth = len(visual.transformer.resblocks)
        assert card.extra["dense_levels"] == tuple(f"block{i + 1}" for i in dense_block_indices(depth))
    else:
        assert card.extra["dense_levels"] == ("layer1", "layer2", "layer3", "layer4")


def test_dense_block_indices():
    assert dense_block_indices(12) == [2, 5, 8, 11]
    assert dense_block_indices(24) == [5, 11, 17, 23]
    assert dense_block_indices(40) == [9, 19, 29, 39]
    assert dense_block_indices(2) == [0, 1]
