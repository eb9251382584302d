"""Semantic-segmentation scores from one confusion matrix summed over the whole test set (protocols.md C.3).

The matrix is accumulated, never averaged per image, and pixels whose ground truth is the ignore label are
dropped together with whatever was predicted on them. Two mIoU conventions are in use in the field:

- `miou` (primary): the mean over the classes present in the prediction OR the ground truth. A class absent
  from both is left out of the mean, a class predicted but absent from the ground truth counts as IoU 0
  (detectron2 v0.6's `SemSegEvaluator`; mmseg's nanmean of IoU, and the Vermouth code evaluates with mmseg).
- `miou_gt_classes`: the mean over the classes present in the GROUND TRUTH only; a class that is only ever
  predicted is left out instead of counting 0 (detectron2's `SemSegEvaluator` after July 2022, which CAT-Seg
  installs). It is never below `miou`, and equals it when no class is predicted without being true.

Both are in percent; a test set where every pixel is the ignore label gives NaN.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np


class ConfusionMatrix:
    """`matrix[pred, gt]` pixel counts over `n_classes` classes (rows: prediction, columns: ground truth)."""

    def __init__(self, n_classes: int):
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self.n = n_classes
        self.matrix = np.zeros((n_classes, n_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray, ignore_index: int) -> None:
        """Add one image (or any batch of pixels): `pred` in 0..n-1, `gt` in 0..n-1 or `ignore_index`."""
        pred = np.asarray(pred).reshape(-1).astype(np.int64)
        gt = np.asarray(gt).reshape(-1).astype(np.int64)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction has {pred.size} pixels, ground truth {gt.size}")
        keep = gt != ignore_index
        pred, gt = pred[keep], gt[keep]
        if gt.size and (gt.min() < 0 or gt.max() >= self.n):
            raise ValueError(f"ground-truth ids outside 0..{self.n - 1} (and not the ignore label {ignore_index})")
        if pred.size and (pred.min() < 0 or pred.max() >= self.n):
            raise ValueError(f"predicted ids outside 0..{self.n - 1}")
        self.matrix += np.bincount(self.n * pred + gt, minlength=self.n * self.n).reshape(self.n, self.n)

    def per_class(self) -> dict[str, np.ndarray]:
        """tp, gt and pred pixel counts per class, and IoU (NaN where the class is in neither)."""
        tp = np.diag(self.matrix).astype(np.float64)
        pred = self.matrix.sum(axis=1).astype(np.float64)
        gt = self.matrix.sum(axis=0).astype(np.float64)
        union = gt + pred - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
        return {"tp": tp, "gt": gt, "pred": pred, "iou": iou}

    def scores(self) -> dict[str, float]:
        """mIoU (both conventions, see the module docstring), fwIoU, mACC and pACC in percent, as detectron2
        reports them."""
        pc = self.per_class()
        present = pc["gt"] + pc["pred"] > 0
        has_gt = pc["gt"] > 0
        total = pc["gt"].sum()
        iou = np.nan_to_num(pc["iou"])
        acc = np.divide(pc["tp"], pc["gt"], out=np.zeros_like(pc["tp"]), where=has_gt)
        return {
            "miou": float(iou[present].sum() / present.sum() * 100) if present.any() else float("nan"),
            "miou_gt_classes": float(iou[has_gt].mean() * 100) if has_gt.any() else float("nan"),
            "fwiou": float((iou * pc["gt"]).sum() / total * 100) if total else float("nan"),
            "macc": float(acc[has_gt].mean() * 100) if has_gt.any() else float("nan"),
            "pixel_acc": float(pc["tp"].sum() / total * 100) if total else float("nan"),
        }


def write_per_class_csv(path: Path, cm: ConfusionMatrix, classnames: Sequence[str]) -> Path:
    """One row per class: id, name, IoU % (empty when the class is in neither), gt and predicted pixels."""
    pc = cm.per_class()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["class_id", "class_name", "iou", "gt_pixels", "pred_pixels"])
        for i, name in enumerate(classnames):
            iou = pc["iou"][i]
            writer.writerow([i, name, "" if np.isnan(iou) else f"{iou * 100:.4f}", int(pc["gt"][i]),
                             int(pc["pred"][i])])
    return path
