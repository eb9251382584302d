"""The FSC protocol end to end on the mini dataset, checked against a direct timm + scikit-learn path."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score

from harness.api import JobContext
from harness.config import BackboneConfig
from harness.paths import harness_home
from harness.plan.planner import open_dataset
from tasks.fsc import mini
from tasks.fsc.linear_probe import search_c_best_val, search_c_lpclip
from tasks.fsc.sampling import load_or_create_fewshot
from tasks.fsc.task import FewShotClassification, FSCProtocol


@pytest.fixture(scope="module")
def backbone():
    from backbones.resnet import ResNetBackbone

    return ResNetBackbone(BackboneConfig(name="resnet", variant="tiny", batch_size=64, feature_dtype="fp32"))


def direct_features(backbone, dataset, items, store_dtype=torch.float32, normalise=False) -> np.ndarray:
    """Independent of harness.data.features: timm's model called directly, rounded to the store dtype, in float64 (the
    precision the probe fits in); raw (lpclip) or L2-normalised by hand (l2-best-val)."""
    batch = backbone.preprocess([dataset.load_image(it) for it in items])
    with torch.no_grad():
        feats = backbone.model.forward_head(backbone.model.forward_features(batch), pre_logits=True)
    feats = feats.to(store_dtype).double().numpy()
    return feats / np.linalg.norm(feats, axis=1, keepdims=True) if normalise else feats


@pytest.mark.parametrize("probe", ["lpclip", "l2-best-val"])
def test_accuracy_matches_sklearn_on_the_same_features(backbone, tmp_path, probe):
    dataset = open_dataset("mini_coop")
    protocol = FSCProtocol(shots=4, seed=2, probe=probe)
    result = FewShotClassification().evaluate(backbone, dataset, protocol, JobContext(tmp_path))

    splits = dataset.splits()
    fewshot = load_or_create_fewshot(dataset.name, dataset.fingerprint(), splits["train"], splits["val"], 4, 2,
                                     harness_home())
    assert [it.path for it in fewshot["train"]] == result.details["support_paths"]
    assert len(fewshot["train"]) == 4 * 12 and len(fewshot["val"]) == 4 * 12
    x_tr, x_val, x_te = (direct_features(backbone, dataset, items, normalise=probe == "l2-best-val")
                         for items in (fewshot["train"], fewshot["val"], splits["test"]))
    y_tr, y_val, y_te = (np.array([it.label for it in items])
                         for items in (fewshot["train"], fewshot["val"], splits["test"]))
    clf = LogisticRegression(C=result.details["c"], max_iter=1000).fit(x_tr, y_tr)
    assert result.metrics["top1"] == pytest.approx(100 * accuracy_score(y_te, clf.predict(x_te)), abs=1e-9)
    assert result.metrics["val_top1"] == pytest.approx(100 * accuracy_score(y_val, clf.predict(x_val)), abs=1e-9)
    assert result.details["val_accuracy"] == pytest.approx(result.metrics["val_top1"] / 100, abs=1e-12)
    search = search_c_lpclip if probe == "lpclip" else search_c_best_val
    assert result.details["c"] == search(x_tr, y_tr, x_val, y_val, protocol.c_grid, 8, 1000).c
    assert result.details["probe"] == probe
    assert result.details["n_test"] == 12 * mini.PER_CLASS["test"]  # the full test split
    assert 100 / 12 < result.metrics["top1"] <= 100  # random-init features still beat chance on mini


def test_c_is_the_best_on_val_among_the_grid():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 16)) * 2
    y = np.repeat(np.arange(5), 8)
    x_tr = centers[y] + rng.normal(size=(40, 16))
    x_val = centers[y] + rng.normal(size=(40, 16))
    grid = [1e2, 1.0, 1e-2, 1e-6]
    res = search_c_best_val(x_tr, y, x_val, y, grid, steps=0, max_iter=1000)
    scores = [accuracy_score(y, LogisticRegression(C=c, max_iter=1000).fit(x_tr, y).predict(x_val)) for c in grid]
    assert res.val_accuracy == pytest.approx(max(scores))
    assert res.c == grid[int(np.argmax(scores))]
    assert res.val_accuracy > 0.9  # separable clusters: a sane probe finds them


def test_support_never_holds_a_test_image_and_is_class_balanced(backbone, tmp_path):
    dataset = open_dataset("mini_coop")
    splits = dataset.splits()
    test_paths = {it.path for it in splits["test"]}
    for shots in (1, 4, 16):
        for seed in (1, 2, 3):
            fewshot = load_or_create_fewshot(dataset.name, dataset.fingerprint(), splits["train"], splits["val"],
                                             shots, seed, harness_home())
            assert not test_paths & {it.path for it in fewshot["train"] + fewshot["val"]}
            counts = np.bincount([it.label for it in fewshot["train"]], minlength=12)
            assert (counts == shots).all()
            assert (np.bincount([it.label for it in fewshot["val"]], minlength=12) == min(shots, 4)).all()


def test_fp16_store_rounds_the_features_every_head_sees(tmp_path):
    """The default store dtype (fp16): the probe fits on features rounded to fp16, stored or streamed alike."""
    from backbones.resnet import ResNetBackbone

    bb = ResNetBackbone(BackboneConfig(name="resnet", variant="tiny", batch_size=64))
    assert bb.config.feature_dtype == "fp16"
    dataset = open_dataset("mini_coop")
    result = FewShotClassification().evaluate(bb, dataset, FSCProtocol(shots=2, seed=1), JobContext(tmp_path))
    splits = dataset.splits()
    fewshot = load_or_create_fewshot(dataset.name, dataset.fingerprint(), splits["train"], splits["val"], 2, 1,
                                     harness_home())
    x_tr, x_te = (direct_features(bb, dataset, items, torch.float16) for items in (fewshot["train"], splits["test"]))
    y_tr, y_te = (np.array([it.label for it in items]) for items in (fewshot["train"], splits["test"]))
    clf = LogisticRegression(C=result.details["c"], max_iter=1000).fit(x_tr, y_tr)
    assert result.metrics["top1"] == pytest.approx(100 * accuracy_score(y_te, clf.predict(x_te)), abs=1e-9)
    assert result.details["feature_modes"] == {"train": "stored", "val": "stored", "test": "stored"}


@pytest.mark.parametrize("choice", ["method", "coop"])
def test_text_classifier_averages_the_chosen_template_set(backbone, tmp_path, monkeypatch, choice):
    """mini_coop's "method" set is the method's ImageNet list (81 prompts), its "coop" set CoOp's one prompt; each
    class embedding is the normalised mean of the normalised text embeddings of its prompts (the real clip:tiny)."""
    import json
    from pathlib import Path

    import torch.nn.functional as F

    from harness.data.text_space import TextSpace

    seen = []
    real = TextSpace.class_embeddings

    def spy(self, classnames, templates):
        emb = real(self, classnames, templates)
        seen.append((self, list(classnames), list(templates), emb))
        return emb

    monkeypatch.setattr(TextSpace, "class_embeddings", spy)
    protocol = FSCProtocol.model_validate({"head": "text-classifier", "shots": 1, "seed": 1, "epochs": 1,
                                           "text_space": "clip:tiny", "template_set": choice})
    result = FewShotClassification().evaluate(backbone, open_dataset("mini_coop"), protocol, JobContext(tmp_path))
    source = json.loads((Path(__file__).parents[2] / "tasks" / "fsc" / "templates.json").read_text())
    expected = source["imagenet"] if choice == "method" else ["a photo of a {}."]
    assert len(seen) == 1
    space, names, templates, emb = seen[0]
    assert templates == expected and len(templates) == (81 if choice == "method" else 1)
    assert result.details["template_set"] == choice and result.details["n_templates"] == len(expected)
    for i in (0, 7):
        name = names[i].replace("_", " ")
        per_prompt = F.normalize(space.encoder.text_features([t.format(name) for t in expected]).double(), dim=-1)
        torch.testing.assert_close(emb[i].double(), F.normalize(per_prompt.mean(0), dim=0), atol=1e-5, rtol=0)


def test_probe_and_templates_belong_to_their_heads():
    """Defaults: the lpclip probe and the method's templates; each key is cleared for the other head (so it never
    changes that head's job key), but a bad value is still refused."""
    from pydantic import ValidationError

    lp = FSCProtocol.model_validate({"shots": 4, "template_set": "coop"})
    assert (lp.probe, lp.template_set, lp.text_space) == ("lpclip", None, None)
    tc = FSCProtocol.model_validate({"head": "text-classifier", "probe": "l2-best-val"})
    assert (tc.probe, tc.template_set, tc.c_grid) == (None, "method", None)
    assert FSCProtocol(head="text-classifier", probe="lpclip") == FSCProtocol(head="text-classifier")
    for bad in ({"probe": "lp-clip"}, {"head": "text-classifier", "template_set": "vermouth"},
                {"head": "text-classifier", "probe": "best"}, {"c_grid": [1.0, 0.0]}):
        with pytest.raises(ValidationError):
            FSCProtocol.model_validate(bad)
