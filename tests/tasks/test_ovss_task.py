"""The OVSS protocol model, training views, the head (FPN + text cosine) and its save-once, reuse-after cache."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from harness.api import JobContext
from harness.catalog import BACKBONES, TASKS
from harness.config import BackboneConfig
from harness.paths import harness_home
from harness.plan.planner import open_dataset
from tasks.ovss.head import FPNTextHead, OVSSHead, level_spec
from tasks.ovss.task import (
    SHORT_TEMPLATES,
    Normaliser,
    OpenVocabSegmentation,
    OVSSProtocol,
    class_text,
    head_key,
    make_view,
    view_plan,
)

MINI = {"train_dataset": "mini_ovss_train", "text_space": "clip:tiny", "templates": ["a photo of a {}."],
        "crop_size": 64, "train_scale": [1.0, 1.0], "flip": False, "iterations": 4, "batch_size": 4, "lr": 1e-3,
        "head_channels": 16, "head_groups": 4, "short_side": 64}


def test_protocol_presets_and_errors():
    whole = OVSSProtocol()
    assert whole.eval_style == "whole" and whole.short_side == 640 and whole.slide_crop is None
    slide = OVSSProtocol(eval_style="slide")
    assert (slide.slide_crop, slide.slide_stride, slide.slide_square, slide.slide_global) == (384, 256, True, True)
    assert OVSSProtocol(eval_style="slide", slide_stride=128).slide_stride == 128
    with pytest.raises(ValidationError, match="shotz"):
        OVSSProtocol(shotz=1)
    with pytest.raises(ValidationError, match="slide_crop"):
        OVSSProtocol(eval_style="slide", slide_crop=None)
    with pytest.raises(ValidationError, match="train_scale"):
        OVSSProtocol(train_scale=[2.0, 1.0])
    assert TASKS.get("ovss") is OpenVocabSegmentation and OpenVocabSegmentation.primary_metric == "miou"


# "templates" of develop-productivity/Vermouth Seg/data/ade150.json at commit 5597f28, copied from the file.
VERMOUTH_SEG_TEMPLATES = [
    "a photo of a {}.", "This is a photo of a {}", "There is a {} in the scene", "There is the {} in the scene",
    "a photo of a {} in the scene", "a photo of a small {}.", "a photo of a medium {}.", "a photo of a large {}.",
    "This is a photo of a small {}.", "This is a photo of a medium {}.", "This is a photo of a large {}.",
    "There is a small {} in the scene.", "There is a medium {} in the scene.", "There is a large {} in the scene.",
]


def test_default_templates_are_the_methods_14_and_the_short_list_is_still_accepted():
    assert OVSSProtocol().templates == VERMOUTH_SEG_TEMPLATES
    assert OVSSProtocol(templates=list(SHORT_TEMPLATES)).templates == list(SHORT_TEMPLATES)
    assert len(SHORT_TEMPLATES) == 4 and set(SHORT_TEMPLATES) != set(VERMOUTH_SEG_TEMPLATES)
    assert OpenVocabSegmentation.version == "2"
    assert OpenVocabSegmentation.report_metrics[:2] == ("miou", "miou_gt_classes")


def test_head_key_follows_the_templates_and_the_task_version(monkeypatch):
    fp = SimpleNamespace(fingerprint=lambda: "fp")
    space = SimpleNamespace(fingerprint="text")

    def key(**protocol):
        return head_key(fp, fp, space, OVSSProtocol(**protocol), "head")

    default = key()
    assert key() == default and key(templates=list(SHORT_TEMPLATES)) != default
    assert key(eval_style="slide") == default  # evaluation settings share the head
    monkeypatch.setattr(OpenVocabSegmentation, "version", "1")
    assert key() != default


def test_make_view_scales_pads_crops_and_flips():
    img = torch.arange(2 * 3, dtype=torch.float32).view(1, 2, 3).repeat(3, 1, 1) / 10
    lab = np.array([[0, 1, 2], [3, 4, 5]])
    out, labels, offset = make_view(img, lab, crop=4, scale=1.0, fy=0.0, fx=0.0, flip=False, ignore_index=255)
    # short side 2 → 4: 4×6, crop 4×4 at the top-left
    assert out.shape == (3, 4, 4) and labels.shape == (4, 4) and offset == (0, 0)
    assert labels[:, 0].tolist() == [0, 0, 3, 3]
    _, small, _ = make_view(img, lab, crop=4, scale=0.5, fy=0.0, fx=0.0, flip=False, ignore_index=255)
    assert (small[2:] == 255).all() and (small[:, 3] == 255).all()  # padded with ignore
    _, flipped, _ = make_view(img, lab, crop=4, scale=1.0, fy=0.0, fx=0.99, flip=True, ignore_index=255)
    assert flipped[0].tolist() == [2, 2, 1, 1]


def test_view_plan_is_seeded_and_covers_every_image():
    p = OVSSProtocol(iterations=5, batch_size=4, seed=3)
    a, b = list(view_plan(10, p)), list(view_plan(10, p))
    assert a == b and len(a) == 5 and all(len(batch) == 4 for batch in a)
    assert {v[0] for batch in a for v in batch} == set(range(10))
    assert a != list(view_plan(10, OVSSProtocol(iterations=5, batch_size=4, seed=4)))


def test_fpn_head_logits_shape_and_scale():
    dense = {"a": torch.randn(2, 8, 16, 16), "b": torch.randn(2, 12, 8, 8), "c": torch.randn(2, 4, 2, 2)}
    spec = level_spec(dense)
    assert [lv["ups"] for lv in spec] == [0, 1, 3]
    head = OVSSHead(FPNTextHead(spec, 8, 4, 5))
    logits = head(dense, torch.randn(7, 5))
    assert logits.shape == (2, 7, 16, 16)
    assert logits.abs().max() <= head.logit_scale + 1e-4  # scale × cosine
    assert float(head.logit_scale.detach()) == pytest.approx(1 / 0.07, rel=1e-5)


def test_class_text_averages_synonyms():
    class Space:
        def class_embeddings(self, names, templates):
            table = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [1.0, 1.0]}
            return torch.nn.functional.normalize(torch.tensor([table[n] for n in names]), dim=1)

    out = class_text(Space(), [["a", "b"], ["c"]], ["{}"])
    torch.testing.assert_close(out, torch.nn.functional.normalize(torch.tensor([[1.0, 1.0], [1.0, 1.0]]), dim=1))


def _resnet():
    return BACKBONES.get("resnet")(BackboneConfig(name="resnet", variant="tiny"))


def test_normaliser_reads_the_backbones_mean_and_std():
    bb = _resnet()
    norm = Normaliser(bb)
    mean, std = torch.tensor(bb.data_config["mean"]), torch.tensor(bb.data_config["std"])
    torch.testing.assert_close(norm.lo.view(3), -mean / std, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(norm.hi.view(3), (1 - mean) / std, rtol=1e-4, atol=1e-4)


def test_head_is_trained_once_then_reused(tmp_path):
    bb = _resnet()
    ds = open_dataset("mini_ovss")
    protocol = OVSSProtocol(**MINI)
    task = OpenVocabSegmentation()
    ctx1 = JobContext(tmp_path / "w1")
    first = task.evaluate(bb, ds, protocol, ctx1)
    assert ctx1.counters["ovss_head_trained"] == 1 and not first.details["head_reused"]
    assert 0 <= first.metrics["miou"] <= 100 and set(first.metrics) >= set(OpenVocabSegmentation.report_metrics)
    assert first.metrics["miou"] <= first.metrics["miou_gt_classes"] <= 100
    assert not first.item_se  # one confusion matrix over the whole set: no item-level SE for either mIoU
    assert first.artifacts["per_class_iou"].is_file() and first.artifacts["overlay"].is_file()
    heads = list((harness_home() / "heads").glob("*.pt"))
    assert len(heads) == 1 and heads[0].stem == first.details["head_key"]

    ctx2 = JobContext(tmp_path / "w2")  # another evaluation setting: same head
    second = task.evaluate(bb, ds, OVSSProtocol(**MINI, eval_style="slide", slide_crop=32, slide_stride=16), ctx2)
    assert ctx2.counters["ovss_head_reused"] == 1 and second.details["head_key"] == first.details["head_key"]
    again = task.evaluate(bb, ds, protocol, JobContext(tmp_path / "w3"))
    assert again.metrics == first.metrics

    heads[0].write_bytes(b"garbage")  # a corrupt head is retrained, never used
    ctx4 = JobContext(tmp_path / "w4")
    redo = task.evaluate(bb, ds, protocol, ctx4)
    assert ctx4.counters["ovss_head_corrupt"] == 1 and ctx4.counters["ovss_head_trained"] == 1
    assert redo.metrics == first.metrics  # same seed, same numbers
    # ... from views read back from the persistent feature cache: no backbone pass for a view seen before
    assert ctx1.counters["ovss_train_views_extracted"] > 0 and ctx1.counters["ovss_test_inputs_extracted"] > 0
    assert ctx4.counters.get("ovss_train_views_extracted", 0) == 0 and ctx4.counters["ovss_train_views_cached"] > 0
    assert ctx4.counters.get("ovss_test_inputs_extracted", 0) == 0

    other = task.evaluate(bb, ds, OVSSProtocol(**{**MINI, "seed": 2}), JobContext(tmp_path / "w5"))
    assert other.details["head_key"] != first.details["head_key"]
