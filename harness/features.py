"""Frozen features per image, computed once per process and reused across seeds, shots and heads.

Keyed by the backbone fingerprint, the dataset fingerprint and the feature kind, then by item path: a
few-shot subset asks only for the images it does not have yet. (The persistent, content-addressed
cache is a separate layer; this memo only avoids recomputation inside one run.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from harness.api import Backbone, ClassificationDataset, ImageItem, JobContext
from harness.cache import FeatureCache
from harness.io import canonical_json, sha256_text
from harness.weights import file_sha256

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

_MEMO: dict[tuple[str, str, str], dict[str, object]] = {}


def clear_memo() -> None:
    _MEMO.clear()


def _extract(backbone: Backbone, dataset: ClassificationDataset, items: Sequence[ImageItem], ctx: JobContext,
             kind: str) -> list:
    """Per-item features of one kind (a [D] tensor, or a dict of [C, H, W] maps), in the order of `items`.

    Order of lookups: this process's memo, then the persistent cache (by image content), then the backbone.
    """
    import torch

    fp = backbone.fingerprint()
    memo = _MEMO.setdefault((sha256_text(canonical_json(fp)), dataset.fingerprint(), kind), {})
    cache = FeatureCache(fp, kind)
    todo: list[tuple[ImageItem, str]] = []
    for it in dict((it.path, it) for it in items if it.path not in memo).values():
        sha = file_sha256(dataset.image_path(it))
        hit = cache.get(sha)
        if hit is None:
            todo.append((it, sha))
        else:
            memo[it.path] = hit
    bs = backbone.batch_size
    n_batches = (len(todo) + bs - 1) // bs
    for b in range(n_batches):
        chunk = todo[b * bs:(b + 1) * bs]
        batch = backbone.preprocess([dataset.load_image(it) for it, _ in chunk])
        with torch.inference_mode():
            feats = backbone.image_features(batch, kinds=(kind,))
        for i, (it, sha) in enumerate(chunk):
            if kind == "global":
                memo[it.path] = feats.global_[i].float().cpu().clone()
            else:
                memo[it.path] = {k: v[i].float().cpu().clone() for k, v in feats.dense.items()}
            cache.put(sha, memo[it.path])
        ctx.on_batch(b + 1, n_batches)
    for name in ("hits", "misses", "corrupt", "streamed"):
        ctx.count(f"feature_cache_{name}", getattr(cache.stats, name))
    ctx.count("images_extracted", len(todo))
    return [memo[it.path] for it in items]


def global_features(backbone: Backbone, dataset: ClassificationDataset, items: Sequence[ImageItem],
                    ctx: JobContext) -> np.ndarray:
    """`[len(items), D]` float32 global features, in the order of `items`."""
    import torch

    return torch.stack(_extract(backbone, dataset, items, ctx, "global")).numpy()


def dense_features(backbone: Backbone, dataset: ClassificationDataset, items: Sequence[ImageItem],
                   ctx: JobContext) -> dict[str, torch.Tensor]:
    """`{level: [len(items), C, H, W]}` frozen dense maps, in the order of `items`."""
    import torch

    per_item = _extract(backbone, dataset, items, ctx, "dense")
    return {k: torch.stack([d[k] for d in per_item]) for k in per_item[0]}
