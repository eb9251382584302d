"""The SBIR protocol on the mini dataset: no unseen class reaches training, metrics, artifact, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

import tasks.text_head
from harness.api import ImageItem, JobContext
from harness.config import BackboneConfig
from harness.errors import HarnessError
from harness.plan.planner import open_dataset
from tasks.sbir.task import SCALE_PRESETS, SBIRProtocol, ZeroShotSBIR, check_no_unseen, training_items

FAST = dict(text_space="clip:tiny", epochs=2, n_qualitative=3)
METRICS = {"map_all", "map_200", "p_100", "p_200", "map_all_noninterp", "map_200_lenient", "map_all_class_avg"}


@pytest.fixture(scope="module")
def backbone():
    from backbones.resnet import ResNetBackbone

    return ResNetBackbone(BackboneConfig(name="resnet", variant="tiny", batch_size=64))


def test_protocol_defaults_and_scale_presets():
    p = SBIRProtocol()
    assert p.scale == pytest.approx(4.6052 / 0.2) and p.scale == SCALE_PRESETS["vermouth"]
    assert (p.text_space, p.lr, p.weight_decay, p.max_train_per_class) == ("clip:vit-l-14", 1e-4, 5e-4, None)
    assert SBIRProtocol(scale="clip").scale == 100.0
    assert SBIRProtocol(scale=10).scale == 10.0
    assert SBIRProtocol(scale="vermouth").model_dump()["scale"] == pytest.approx(23.026)
    with pytest.raises(ValidationError, match="unknown scale preset 'nope'"):
        SBIRProtocol(scale="nope")
    with pytest.raises(ValidationError, match="epoch"):
        SBIRProtocol(epoch=3)


def test_training_classes_never_meet_the_unseen_ones():
    ds = open_dataset("mini_sbir")
    unseen = set(ds.unseen_classnames())
    n_seen = len(ds.seen_classnames())
    for cap in (None, 1, 3):
        items = training_items(ds, cap, seed=1)
        assert {it.classname for it in items} & unseen == set()
        assert {it.label for it in items} <= set(range(n_seen))
        assert {it.classname for it in items} == set(ds.seen_classnames())
    capped = training_items(ds, 3, seed=1)
    assert len(capped) == 2 * 3 * n_seen  # per class and domain
    assert [it.path for it in capped] == [it.path for it in training_items(ds, 3, seed=1)]
    assert [it.path for it in capped] != [it.path for it in training_items(ds, 3, seed=2)]
    leaked = ImageItem(path="x.png", label=n_seen, classname=ds.unseen_classnames()[0])
    with pytest.raises(HarnessError, match="unseen classes reached training"):
        check_no_unseen([*capped, leaked], ds)


def test_evaluate_trains_on_seen_classes_only_and_reports_metrics_and_grid(backbone, tmp_path, monkeypatch):
    ds = open_dataset("mini_sbir")
    calls = []
    real = tasks.text_head.train_text_classifier

    def spy(inputs, labels, class_embeddings, neck, settings):
        calls.append((labels.clone(), class_embeddings.shape, settings))
        return real(inputs, labels, class_embeddings, neck, settings)

    monkeypatch.setattr(tasks.text_head, "train_text_classifier", spy)
    result = ZeroShotSBIR().evaluate(backbone, ds, SBIRProtocol(**FAST), JobContext(tmp_path))

    # the trainer saw seen-class labels and anchors only, sketches and photos together
    (labels, anchor_shape, settings), = calls
    n_seen = len(ds.seen_classnames())
    assert set(labels.tolist()) == set(range(n_seen))
    assert anchor_shape[0] == n_seen
    assert settings.temperature == pytest.approx(0.2 / 4.6052)
    assert len(labels) == len(ds.splits()["sketch_train"]) + len(ds.splits()["photo_train"])

    assert METRICS <= set(result.metrics)
    for key in METRICS:
        assert 0 <= result.metrics[key] <= 100
    # every reported metric is in the result; the query-averaged ones carry an item SE over the queries
    assert ZeroShotSBIR.version == "2" and "map_all_noninterp" in ZeroShotSBIR.report_metrics
    assert set(ZeroShotSBIR.report_metrics) <= set(result.metrics)
    n_queries = len(ds.splits()["sketch_zero"])
    for key in ("map_all", "map_200", "p_100", "p_200", "map_all_noninterp"):
        assert result.item_se[key].n == n_queries
    d = result.details
    assert (d["n_queries"], d["n_gallery"]) == (len(ds.splits()["sketch_zero"]), len(ds.splits()["photo_zero"]))
    assert d["uses_neck"] is False and d["split_dir"] == "zeroshot1"
    assert set(d["ap_all_per_class"]) == set(ds.unseen_classnames())
    grid = result.artifacts["qualitative"]
    assert grid.parent == tmp_path and grid.is_file()
    with Image.open(grid) as im:
        assert im.size[1] == 3 * (96 + 14) and im.size[0] == 96 + 12 + 10 * 96
        pixels = np.asarray(im.convert("RGB"))
    green, red = np.array([20, 170, 40]), np.array([210, 30, 30])
    border = pixels[:96, 96 + 12:][:, ::96]  # left border column of each result tile, first row
    assert ((border == green).all(-1) | (border == red).all(-1)).all()
    assert len(d["qualitative_queries"]) == 3


def test_same_seed_same_numbers(backbone, tmp_path):
    ds = open_dataset("mini_sbir")
    first = ZeroShotSBIR().evaluate(backbone, ds, SBIRProtocol(**FAST), JobContext(tmp_path / "a"))
    second = ZeroShotSBIR().evaluate(backbone, ds, SBIRProtocol(**FAST), JobContext(tmp_path / "b"))
    assert first.metrics == second.metrics


def test_a_neck_is_trained_on_dense_features(tmp_path):
    """A backbone with a neck: the neck (+ projection) is what trains, fed dense maps."""
    from backbones.resnet import ResNetBackbone

    class PooledNeck(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.LazyLinear(16)

        def forward(self, dense):
            return self.proj(torch.cat([v.mean(dim=(2, 3)) for v in dense.values()], dim=1))

    class WithNeck(ResNetBackbone):
        def neck(self, seed=None):
            torch.manual_seed(0 if seed is None else seed)
            return PooledNeck()

    bb = WithNeck(BackboneConfig(name="resnet", variant="tiny", batch_size=64))
    result = ZeroShotSBIR().evaluate(bb, open_dataset("mini_sbir"), SBIRProtocol(**FAST), JobContext(tmp_path))
    assert result.details["uses_neck"] is True
    assert METRICS <= set(result.metrics)
