"""Frozen features of a list of images, read batch by batch: memory is bounded by a batch, never by a split.

A `FeatureSet` names the images; it holds no features. Heads read it two ways:
- `batches()`: consecutive rows in item order, for the test, val, query and gallery splits that flow
  backbone → head → metric state. Misses are computed through the input pipeline (`harness.data.inputs`, decode in
  worker processes overlapping the model) in fixed batches of the missing items.
- `rows(index)`: any rows, for a trainer's shuffled mini-batches over the training set.

Where features come from, per image: the persistent store (`harness.data.cache`, content-addressed by the image
file's sha256, remembered per file by `harness.data.hashindex`), else the backbone. A set is stored when it fits
in half the store's budget (`worth_storing`): `prepare()` then extracts its misses once and the trainer reads
mini-batches back memory-mapped ("stored"). A training set that cannot fit is recomputed mini-batch by
mini-batch as the method's own code does ("recomputed"); a split that is only read once is computed as it
streams ("streamed"). Whatever the mode, a head sees the same values: features rounded to the store dtype
and returned as float32. (On the CPU, a batch-dependent backbone in fp32 gives last-bit differences between
a feature computed in its extraction batch and one recomputed in a trainer's mini-batch; fp64 suites do not.)

`lookup` and `compute_missing` are the path `harness.run.parallel_extract` uses, so a prewarmed entry is exactly
what a job would have written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from harness.api import Backbone, ClassificationDataset, ImageItem, JobContext
from harness.data.cache import FeatureCache, Payload, round_to_store, worth_storing
from harness.data.weights import file_sha256

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

Todo = tuple[ImageItem, str]  # an item whose features are not cached yet, with its image file's sha256
Rows = "torch.Tensor | dict[str, torch.Tensor]"  # [n, D], or {level: [n, C, H, W]}


def store_dtype(backbone: Backbone) -> str:
    return getattr(backbone.config, "feature_dtype", "fp32")


def feature_cache(backbone: Backbone, kind: str) -> FeatureCache:
    return FeatureCache(backbone.fingerprint(), kind, dtype=store_dtype(backbone))


def lookup(cache: FeatureCache, dataset: ClassificationDataset, items: Sequence[ImageItem]
           ) -> Iterator[tuple[ImageItem, str, Payload | None]]:
    """Each item's image sha256 and its verified cache entry (None: missing or corrupt, so to compute)."""
    for it in items:
        sha = file_sha256(dataset.image_path(it))
        yield it, sha, cache.get(sha)


def batched(todo: Sequence, batch_size: int) -> list[list]:
    """Consecutive chunks of `batch_size`: the batches one worker forms from a list of missing items."""
    return [list(todo[s:s + batch_size]) for s in range(0, len(todo), batch_size)]


def _forward(backbone: Backbone, batch: torch.Tensor, kind: str, dtype: str | None) -> list[Payload]:
    """One backbone pass → per-row payloads on the CPU, rounded to the store dtype `dtype` (each row its own
    storage: a row never keeps its whole batch alive)."""
    import torch

    with torch.inference_mode():
        feats = backbone.image_features(batch, kinds=(kind,))

    def row(t: torch.Tensor) -> torch.Tensor:
        out = round_to_store(t.float(), dtype)
        return out.clone() if out.untyped_storage().data_ptr() == t.untyped_storage().data_ptr() else out

    if kind == "global":
        return [row(r) for r in feats.global_]
    return [{k: row(v[i]) for k, v in feats.dense.items()} for i in range(len(batch))]


def compute_missing(backbone: Backbone, dataset: ClassificationDataset, batches: Sequence[Sequence[Todo]],
                    kind: str, cache: FeatureCache, on_batch: Callable[[int, int], None] | None = None,
                    store: bool = True) -> Iterator[tuple[ImageItem, str, Payload]]:
    """Run the backbone over `batches` as given (decoded by the input pipeline), store each item's features in
    `cache` when `store`, and yield them, rounded to the store dtype, in order.

    The caller decides the batches because some backbones' numerics depend on the batch an image is in
    (a batch of 8 and one of 24 give last-bit differences for Vermouth on the CPU): the same batches give
    the same bits. Entries are written one by one, atomically, so an interrupted pass leaves whole entries.
    """
    from harness.data.inputs import preprocessed_batches

    item_batches = [[it for it, _ in chunk] for chunk in batches]
    for b, (chunk, pixels) in enumerate(zip(batches, preprocessed_batches(backbone, dataset, item_batches),
                                            strict=True)):
        for (it, sha), payload in zip(chunk, _forward(backbone, pixels, kind, cache.dtype), strict=True):
            if store:
                cache.put(sha, payload)  # a put that cannot store counts itself as streamed
            yield it, sha, payload
        if on_batch is not None:
            on_batch(b + 1, len(batches))


def stack(payloads: Sequence[Payload]) -> Rows:
    """Per-item payloads → one float32 batch (a [n, D] tensor or a dict of [n, C, H, W] maps), written row by
    row into one allocation (no second full-size copy)."""
    import torch

    def one(rows: list[torch.Tensor]) -> torch.Tensor:
        out = torch.empty((len(rows), *rows[0].shape), dtype=torch.float32)
        for i, r in enumerate(rows):
            out[i].copy_(r)
        return out

    if isinstance(payloads[0], dict):
        return {k: one([p[k] for p in payloads]) for k in payloads[0]}
    return one(list(payloads))


MAX_BATCH_BYTES = 256 * 2**20  # a streamed batch of float32 rows stays below this (sd15 at 512 px: 11 rows)


class FeatureSet:
    """The frozen features of `items` (one kind), read in batches; see the module doc for the modes."""

    def __init__(self, backbone: Backbone, dataset: ClassificationDataset, items: Sequence[ImageItem],
                 ctx: JobContext, kind: str):
        self.backbone, self.dataset, self.items, self.ctx, self.kind = backbone, dataset, list(items), ctx, kind
        self.cache = feature_cache(backbone, kind)
        self.shas = [file_sha256(dataset.image_path(it)) for it in self.items]
        self.mode = "streamed"
        self._store: bool | None = None  # decided from the bytes per item, once known
        self._elements: int | None = None  # numbers per image's features
        self._resident: Rows | None = None  # a prepared set small enough to hold whole (see `prepare`)

    def __len__(self) -> int:
        return len(self.items)

    # -- the store decision ------------------------------------------------------------------------------
    def _decide(self) -> bool:
        """Store the set iff all its distinct images' features fit in half the budget."""
        if self._store is None:
            self._store = worth_storing(self._bytes_per_item() * len(set(self.shas)))
        return self._store

    def _missing(self) -> list[Todo]:
        """Items without an entry, the first of each content only, in item order."""
        seen: set[str] = set()
        todo = []
        for it, sha in zip(self.items, self.shas, strict=True):
            if sha not in seen and not self.cache.contains(sha):
                seen.add(sha)
                todo.append((it, sha))
        return todo

    # -- reading -----------------------------------------------------------------------------------------
    def _read(self, sha: str) -> Payload | None:
        return self.cache.get(sha) if self.cache.contains(sha) else None

    def batches(self, batch_size: int | None = None) -> Iterator[Rows]:
        """Consecutive rows in item order, `batch_size` (default: the backbone's) at a time."""
        size = self.rows_per_batch(batch_size or self.backbone.batch_size)
        todo = self._missing()
        if not todo:
            self.mode = "stored"  # every row read back from the store
        pending = {sha for _, sha in todo}
        uses: dict[str, int] = {}
        for sha in self.shas:
            uses[sha] = uses.get(sha, 0) + 1
        fresh = self._compute_stream(todo)
        buffer: dict[str, Payload] = {}  # computed, not yet handed out: about one batch of the pipeline
        for start in range(0, len(self.items), size):
            rows = []
            for i in range(start, min(start + size, len(self.items))):
                sha = self.shas[i]
                while sha in pending and sha not in buffer:
                    got_sha, payload = next(fresh)
                    pending.discard(got_sha)
                    buffer[got_sha] = payload
                uses[sha] -= 1
                if sha in buffer:
                    rows.append(buffer[sha] if uses[sha] else buffer.pop(sha))
                else:  # stored before this pass (or evicted meanwhile by another run: computed alone)
                    hit = self._read(sha)
                    rows.append(hit if hit is not None else self._compute_rows([i])[0])
            yield stack(rows)

    def rows_per_batch(self, wanted: int) -> int:
        """`wanted`, capped so one batch of float32 rows stays under MAX_BATCH_BYTES (known from one item)."""
        if not self.items:
            return wanted
        return max(1, min(wanted, MAX_BATCH_BYTES // max(1, 4 * self._elements_per_item())))

    def _elements_per_item(self) -> int:
        """Numbers per image: from the backbone's declared shapes, else a stored entry, else one image computed."""
        import math

        if self._elements is None:
            shapes = (type(self.backbone).feature_shapes(self.backbone.config) or {}).get(self.kind)
            if shapes:
                self._elements = sum(math.prod(shape) for shape in shapes.values())
            else:
                stored = next((s for s in self.shas if self.cache.contains(s)), None)
                probe = self._read(stored) if stored is not None else None
                if probe is None:  # one image alone, only to learn the size of its features
                    probe = self._compute_rows([0])[0]
                self._elements = sum(t.numel() for t in (probe.values() if isinstance(probe, dict) else [probe]))
        return self._elements

    def _bytes_per_item(self) -> int:
        """Bytes of one image's features in the store dtype (float32 when the store keeps the computed dtype)."""
        return self._elements_per_item() * {"fp16": 2, "bf16": 2}.get(str(self.cache.dtype), 4)

    def _compute_stream(self, todo: list[Todo]) -> Iterator[tuple[str, Payload]]:
        """Missing features, computed in fixed batches of the missing list; stored if the set is worth it."""
        if not todo:
            return
        batches = batched(todo, self.backbone.batch_size)
        for _, sha, payload in compute_missing(self.backbone, self.dataset, batches, self.kind, self.cache,
                                               self.ctx.on_batch, store=False):
            if not self._decide():
                self.cache.stats.streamed += 1
            elif self.cache.put(sha, payload):
                self.mode = "stored"
            self.ctx.count("images_extracted")
            yield sha, payload

    def prepare(self) -> FeatureSet:
        """Before training: extract and store every missing feature when the set is worth storing ("stored"),
        else leave them to be recomputed mini-batch by mini-batch ("recomputed")."""
        todo = self._missing()
        if todo:
            if not self._decide():
                self.mode = "recomputed"
                return self
            for _ in self._compute_stream(todo):
                pass
        self.mode = "stored"
        if len(self.items) * 4 * self._elements_per_item() <= MAX_BATCH_BYTES:
            # A set no bigger than one streamed batch (a few-shot train set) is held for the job, so each of its
            # epochs does not read every entry back from disk: memory stays bounded by a batch, as streaming's.
            self._resident = self.rows(range(len(self.items)))
        return self

    def _compute_rows(self, indices: Sequence[int]) -> list[Payload]:
        """Features of the items at `indices`, computed now (decoded here) in backbone-sized batches."""
        out: list[Payload] = []
        size = self.backbone.batch_size
        for s in range(0, len(indices), size):
            chunk = indices[s:s + size]
            pixels = self.backbone.preprocess([self.dataset.load_image(self.items[i]) for i in chunk])
            out += _forward(self.backbone, pixels, self.kind, self.cache.dtype)
        self.ctx.count("images_recomputed", len(indices))
        return out

    def rows(self, index: Sequence[int] | torch.Tensor) -> Rows:
        """The rows at `index` (any order): read from the store, the misses computed together in one batch."""
        idx = [int(i) for i in index]
        if self._resident is not None:
            held = self._resident
            return {k: v[idx] for k, v in held.items()} if isinstance(held, dict) else held[idx]
        found: list[Payload | None] = [self._read(self.shas[i]) for i in idx]
        missing = [n for n, p in enumerate(found) if p is None]
        if missing:
            for n, payload in zip(missing, self._compute_rows([idx[n] for n in missing]), strict=True):
                found[n] = payload
        return stack(found)  # type: ignore[arg-type]

    def matrix(self) -> np.ndarray:
        """All rows of a global-feature set as one float32 [n, D] array (few-shot train/val: small by design)."""
        import numpy as np

        if self.kind != "global":
            raise ValueError("matrix() is for global features; dense sets are read in batches")
        return np.concatenate([b.numpy() for b in self.batches()]) if self.items else np.zeros((0, 0), np.float32)

    def finish(self) -> None:
        """Copy this set's store counters into the job's counters."""
        self.ctx.count("images_extracted", 0)  # present, even when everything was a hit
        for name in ("hits", "misses", "corrupt", "streamed", "evicted"):
            self.ctx.count(f"feature_cache_{name}", getattr(self.cache.stats, name))


def feature_set(backbone: Backbone, dataset: ClassificationDataset, items: Sequence[ImageItem], ctx: JobContext,
                kind: str) -> FeatureSet:
    return FeatureSet(backbone, dataset, items, ctx, kind)


def global_features(backbone: Backbone, dataset: ClassificationDataset, items: Sequence[ImageItem],
                    ctx: JobContext) -> np.ndarray:
    """`[len(items), D]` float32 global features, in the order of `items` (a small set: the whole matrix)."""
    fs = FeatureSet(backbone, dataset, items, ctx, "global")
    out = fs.matrix()
    fs.finish()
    return out


def dense_features(backbone: Backbone, dataset: ClassificationDataset, items: Sequence[ImageItem],
                   ctx: JobContext) -> dict[str, torch.Tensor]:
    """`{level: [len(items), C, H, W]}` frozen dense maps, in the order of `items`: whole in memory, so only
    for small sets (tests, plots); tasks read a `FeatureSet` in batches."""
    import torch

    fs = FeatureSet(backbone, dataset, items, ctx, "dense")
    parts = list(fs.batches())
    fs.finish()
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
