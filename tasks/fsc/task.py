"""Few-shot classification: K-shot support per class (seeded, persisted), a head trained on it, top-1
accuracy on the full test split. The protocol belongs to the task, so every backbone gets the same one.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from harness.api import Backbone, ClassificationDataset, JobContext, Result, StrictModel, Task
from harness.catalog import register_task
from harness.features import global_features
from harness.paths import harness_home
from tasks.fsc.linear_probe import l2_normalise, search_c
from tasks.fsc.sampling import load_or_create_fewshot

COARSE_C_GRID = [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6]  # CoOp lpclip's grid


class FSCProtocol(StrictModel):
    shots: int = Field(16, ge=1, description="K images per class sampled from train")
    seed: int = Field(1, description="seeds the K-shot (and few-shot val) sampling")
    head: Literal["linear-probe"] = "linear-probe"
    c_grid: list[float] = Field(default_factory=lambda: list(COARSE_C_GRID), min_length=1)
    c_search_steps: int = Field(8, ge=0)
    max_iter: int = Field(1000, ge=1)


@register_task("fsc")
class FewShotClassification(Task):
    name = "fsc"
    version = "1"
    description = "few-shot classification (CoOp protocol), top-1 on the full test split"
    protocol_model = FSCProtocol
    column_keys: ClassVar[tuple[str, ...]] = ("head", "shots")
    primary_metric = "top1"

    def evaluate(self, backbone: Backbone, dataset: ClassificationDataset, protocol: FSCProtocol,
                 ctx: JobContext) -> Result:
        splits = dataset.splits()
        fewshot = load_or_create_fewshot(dataset.name, dataset.fingerprint(), splits["train"], splits["val"],
                                         protocol.shots, protocol.seed, harness_home())
        train, val, test = fewshot["train"], fewshot["val"], splits["test"]
        feats = {name: l2_normalise(global_features(backbone, dataset, items, ctx))
                 for name, items in (("train", train), ("val", val), ("test", test))}
        labels = {name: np.array([it.label for it in items])
                  for name, items in (("train", train), ("val", val), ("test", test))}
        probe = search_c(feats["train"], labels["train"], feats["val"], labels["val"],
                         protocol.c_grid, protocol.c_search_steps, protocol.max_iter)
        top1 = float((probe.model.predict(feats["test"]) == labels["test"]).mean() * 100)
        return Result(
            metrics={"top1": top1, "val_top1": probe.val_accuracy * 100},
            details={"c": probe.c, "n_train": len(train), "n_val": len(val), "n_test": len(test),
                     "n_classes": len(dataset.classnames()), "feature_dim": int(feats["train"].shape[1]),
                     "support_paths": [it.path for it in train], "fewshot_info": fewshot.get("info", {})},
        )
