"""Frozen features per image, computed once per process and reused across seeds, shots and heads.

Keyed by the backbone fingerprint, the dataset fingerprint and the feature kind, then by item path: a
few-shot subset asks only for the images it does not have yet. (The persistent, content-addressed
cache is a separate layer; this memo only avoids recomputation inside one run.)

`lookup` and `compute_missing` are the one code path that turns images into cache entries: a job's
`_extract` and each worker of `harness.parallel_extract` both go through them, so a prewarmed entry is
exactly what the job would have written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from harness.api import Backbone, ClassificationDataset, ImageItem, JobContext
from harness.cache import FeatureCache, Payload
from harness.io import canonical_json, sha256_text
from harness.weights import file_sha256

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

_MEMO: dict[tuple[str, str, str], dict[str, object]] = {}
Todo = tuple[ImageItem, str]  # an item whose features are not cached yet, with its image file's sha256


def clear_memo() -> None:
    _MEMO.clear()


def lookup(cache: FeatureCache, dataset: ClassificationDataset, items: Sequence[ImageItem]
           ) -> Iterator[tuple[ImageItem, str, Payload | None]]:
    """Each item's image sha256 and its verified cache entry (None: missing or corrupt, so to compute)."""
    for it in items:
        sha = file_sha256(dataset.image_path(it))
        yield it, sha, cache.get(sha)


def batched(todo: Sequence[Todo], batch_size: int) -> list[list[Todo]]:
    """Consecutive chunks of `batch_size`: the batches one worker forms from a list of missing items."""
    return [list(todo[s:s + batch_size]) for s in range(0, len(todo), batch_size)]


def compute_missing(backbone: Backbone, dataset: ClassificationDataset, batches: Sequence[Sequence[Todo]],
                    kind: str, cache: FeatureCache, on_batch: Callable[[int, int], None] | None = None
                    ) -> Iterator[tuple[ImageItem, Payload]]:
    """Run the backbone over `batches` as given, store each item's features in `cache`, yield them in order.

    The caller decides the batches because some backbones' numerics depend on the batch an image is in
    (a batch of 8 and one of 24 give last-bit differences for Vermouth on the CPU): the same batches give
    the same bits. Entries are written one by one, atomically, so an interrupted pass leaves whole entries.
    """
    import torch

    for b, chunk in enumerate(batches):
        batch = backbone.preprocess([dataset.load_image(it) for it, _ in chunk])
        with torch.inference_mode():
            feats = backbone.image_features(batch, kinds=(kind,))
        for i, (it, sha) in enumerate(chunk):
            if kind == "global":
                payload = feats.global_[i].float().cpu().clone()
            else:
                payload = {k: v[i].float().cpu().clone() for k, v in feats.dense.items()}
            cache.put(sha, payload)
            yield it, payload
        if on_batch is not None:
            on_batch(b + 1, len(batches))


def _extract(backbone: Backbone, dataset: ClassificationDataset, items: Sequence[ImageItem], ctx: JobContext,
             kind: str) -> list:
    """Per-item features of one kind (a [D] tensor, or a dict of [C, H, W] maps), in the order of `items`.

    Order of lookups: this process's memo, then the persistent cache (by image content), then the backbone.
    """
    fp = backbone.fingerprint()
    memo = _MEMO.setdefault((sha256_text(canonical_json(fp)), dataset.fingerprint(), kind), {})
    cache = FeatureCache(fp, kind)
    todo: list[Todo] = []
    fresh = dict((it.path, it) for it in items if it.path not in memo).values()
    for it, sha, hit in lookup(cache, dataset, list(fresh)):
        if hit is None:
            todo.append((it, sha))
        else:
            memo[it.path] = hit
    for it, payload in compute_missing(backbone, dataset, batched(todo, backbone.batch_size), kind, cache,
                                       ctx.on_batch):
        memo[it.path] = payload
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
