"""Frozen global features per image, computed once per process and reused across seeds, shots and heads.

Keyed by the backbone fingerprint and the dataset fingerprint, then by item path: a few-shot subset
asks only for the images it does not have yet. (The persistent, content-addressed cache is a
separate layer; this memo only avoids recomputation inside one run.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.api import Backbone, ClassificationDataset, ImageItem, JobContext
from harness.io import canonical_json, sha256_text

_MEMO: dict[tuple[str, str], dict[str, np.ndarray]] = {}


def clear_memo() -> None:
    _MEMO.clear()


def global_features(backbone: Backbone, dataset: ClassificationDataset, items: Sequence[ImageItem],
                    ctx: JobContext) -> np.ndarray:
    """`[len(items), D]` float32 global features, in the order of `items`."""
    import torch

    memo = _MEMO.setdefault((sha256_text(canonical_json(backbone.fingerprint())), dataset.fingerprint()), {})
    todo = list(dict.fromkeys(it.path for it in items if it.path not in memo))
    by_path = {it.path: it for it in items}
    bs = backbone.batch_size
    n_batches = (len(todo) + bs - 1) // bs
    for b in range(n_batches):
        chunk = [by_path[p] for p in todo[b * bs:(b + 1) * bs]]
        batch = backbone.preprocess([dataset.load_image(it) for it in chunk])
        with torch.inference_mode():
            feats = backbone.image_features(batch, kinds=("global",)).global_
        feats = feats.float().cpu().numpy()
        for it, f in zip(chunk, feats, strict=True):
            memo[it.path] = f
        ctx.on_batch(b + 1, n_batches)
    return np.stack([memo[it.path] for it in items]).astype(np.float32)
