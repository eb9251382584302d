"""mIoU and friends against an independent computation (scikit-learn's confusion matrix on flat labels)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from tasks.ovss.metrics import ConfusionMatrix, write_per_class_csv


def reference(preds: list[np.ndarray], gts: list[np.ndarray], n: int, ignore: int) -> dict[str, float]:
    gt = np.concatenate([g.ravel() for g in gts])
    pred = np.concatenate([p.ravel() for p in preds])
    keep = gt != ignore
    cm = confusion_matrix(gt[keep], pred[keep], labels=np.arange(n))  # rows gt, columns pred
    tp = np.diag(cm).astype(float)
    gt_c, pred_c = cm.sum(axis=1), cm.sum(axis=0)
    present = (gt_c + pred_c) > 0
    iou = tp[present] / (gt_c + pred_c - tp)[present]
    return {"miou": iou.mean() * 100, "pixel_acc": tp.sum() / cm.sum() * 100,
            "macc": (tp[gt_c > 0] / gt_c[gt_c > 0]).mean() * 100,
            "miou_gt_classes": miou_gt_classes_by_masks(pred[keep], gt[keep], n)}


def miou_gt_classes_by_masks(pred: np.ndarray, gt: np.ndarray, n: int) -> float:
    """The newer detectron2 convention written with pixel masks, no confusion matrix: per class present in
    the ground truth, |pred ∩ gt| / |pred ∪ gt|; mean over those classes, in %."""
    ious = []
    for c in range(n):
        p, g = pred == c, gt == c
        if g.any():
            ious.append((p & g).sum() / (p | g).sum())
    return float(np.mean(ious) * 100)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ignore", [255, 65535, 459])
def test_miou_equals_sklearn_with_ignore_and_absent_classes(seed, ignore):
    rng = np.random.default_rng(seed)
    n = 12
    gts, preds = [], []
    for _ in range(5):
        shape = tuple(rng.integers(5, 40, size=2))
        gt = rng.choice([0, 1, 2, 3, 5, 7], size=shape)  # 4, 6, 8.. absent from the ground truth
        gt[rng.uniform(size=shape) < 0.2] = ignore
        pred = rng.choice([0, 1, 2, 3, 4, 5, 7, 9], size=shape)  # 4, 9: predicted, never true
        gts.append(gt)
        preds.append(pred)
    cm = ConfusionMatrix(n)
    for p, g in zip(preds, gts, strict=True):
        cm.update(p, g, ignore)
    got, want = cm.scores(), reference(preds, gts, n, ignore)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9)
    iou = cm.per_class()["iou"]
    assert np.isnan(iou[[6, 8, 10, 11]]).all()  # absent from both: excluded
    assert iou[4] == 0 and iou[9] == 0  # predicted, never true: IoU 0 in the mean


def test_small_hand_example():
    gt = np.array([[0, 0, 1, 255]])
    pred = np.array([[0, 1, 1, 2]])  # the prediction on the ignore pixel does not count
    cm = ConfusionMatrix(4)
    cm.update(pred, gt, 255)
    s = cm.scores()
    assert s["miou"] == pytest.approx((0.5 + 0.5) / 2 * 100)  # classes 2, 3 absent from both
    assert s["miou_gt_classes"] == pytest.approx((0.5 + 0.5) / 2 * 100)  # nothing predicted-only: the same
    assert s["pixel_acc"] == pytest.approx(2 / 3 * 100)


def test_the_two_miou_conventions_by_hand():
    # 4 classes. Scored pixels (gt, pred): (0,0) (0,2) (1,1) (1,1); the two ignore pixels' predictions (3, 0) drop.
    # class 0: tp 1, gt 2, pred 1 -> IoU 1/2;  class 1: tp 2, gt 2, pred 2 -> IoU 1
    # class 2: predicted once, never true -> IoU 0;  class 3: only predicted on ignore -> absent from both
    gt = np.array([[0, 0, 1], [1, 255, 255]])
    pred = np.array([[0, 2, 1], [1, 3, 0]])
    cm = ConfusionMatrix(4)
    cm.update(pred, gt, 255)
    s = cm.scores()
    assert s["miou"] == pytest.approx((0.5 + 1 + 0) / 3 * 100)  # gt ∪ pred classes {0, 1, 2}
    assert s["miou_gt_classes"] == pytest.approx((0.5 + 1) / 2 * 100)  # gt classes {0, 1}
    assert s["pixel_acc"] == pytest.approx(3 / 4 * 100)
    assert s["macc"] == pytest.approx((1 / 2 + 1) / 2 * 100)
    # a class that is only ever predicted can pull miou to 0 while miou_gt_classes stays at the gt classes' mean
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 0, 2, 2]), np.array([0, 0, 1, 1]), 255)
    s = cm.scores()
    assert s["miou"] == pytest.approx((1 + 0 + 0) / 3 * 100)  # class 1 missed (IoU 0), class 2 predicted-only
    assert s["miou_gt_classes"] == pytest.approx((1 + 0) / 2 * 100)


def test_all_ignore_gives_nan_for_both_conventions():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1, 2]), np.full(3, 255), 255)
    s = cm.scores()
    assert np.isnan(s["miou"]) and np.isnan(s["miou_gt_classes"])


def test_matrix_is_summed_not_averaged_per_image():
    a, b = ConfusionMatrix(2), ConfusionMatrix(2)
    g1, p1 = np.zeros((10, 10), int), np.zeros((10, 10), int)
    g2, p2 = np.ones((1, 2), int), np.array([[1, 0]])
    a.update(p1, g1, 255)
    a.update(p2, g2, 255)
    b.update(np.concatenate([p1.ravel(), p2.ravel()]), np.concatenate([g1.ravel(), g2.ravel()]), 255)
    assert a.scores() == b.scores()


def test_rejects_out_of_range_ids():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="ground-truth"):
        cm.update(np.zeros(2, int), np.array([0, 3]), 255)
    with pytest.raises(ValueError, match="predicted"):
        cm.update(np.array([0, 5]), np.zeros(2, int), 255)


def test_per_class_csv(tmp_path):
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1, 1]), np.array([0, 1, 0]), 255)
    path = write_per_class_csv(tmp_path / "iou.csv", cm, ["a", "b, bee", "c"])
    rows = list(csv.DictReader(path.open()))
    assert [r["class_name"] for r in rows] == ["a", "b, bee", "c"]
    assert float(rows[0]["iou"]) == pytest.approx(50.0) and float(rows[1]["iou"]) == pytest.approx(50.0)
    assert rows[2]["iou"] == ""
