"""Images into model batches off the main thread: a torch DataLoader whose workers decode and preprocess.

Decoding a 500×375 JPEG and preprocessing it to 224 px costs ~3.5 ms of one core (1.1 ms decode, 2.4 ms
preprocess: `benchmarks/test_decode_overlap.py`), ~285 images/s; a GPU runs a ViT-B/16 at thousands. So
decoding runs in worker processes (`--workers N`, or the `HARNESS_WORKERS` variable it sets; default: the
CPUs minus one, at most 8), with pinned memory and prefetch when the model runs on CUDA, while the main
process runs the model.

Deterministic whatever the worker count: the caller fixes the batches (a batch sampler of explicit index
lists) and the loader yields them in order; a backbone's `preprocess` of a list is its per-image transform
stacked, so one image preprocessed alone in a worker gives the bytes it would in a batch. An image that
cannot be decoded raises its one-line `DataMissingError` in the main process, naming the file.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.errors import ConfigError, HarnessError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from harness.api import Backbone, ClassificationDataset, ImageItem

MAX_DEFAULT_WORKERS = 8


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers() -> int:
    """`HARNESS_WORKERS` when set, else one decoding process per spare CPU (at most 8)."""
    raw = os.environ.get("HARNESS_WORKERS")
    if raw not in (None, ""):
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"HARNESS_WORKERS must be an integer >= 0, got '{raw}'") from None
        if value < 0:
            raise ConfigError(f"HARNESS_WORKERS must be an integer >= 0, got '{raw}'")
        return value
    return min(MAX_DEFAULT_WORKERS, max(0, available_cpus() - 1))


@dataclass(frozen=True)
class _Failed:
    """A worker's decode error, carried as a value: the main process raises it with its own one-line message."""

    message: str


class _Images:
    """Map-style dataset: index → the preprocessed [3, H, W] tensor of one item (or a `_Failed`)."""

    def __init__(self, backbone: Backbone, dataset: ClassificationDataset, items: Sequence[ImageItem]):
        self.preprocess = backbone.preprocess
        self.dataset = dataset
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        try:
            return self.preprocess([self.dataset.load_image(self.items[i])])[0]
        except HarnessError as exc:
            return _Failed(str(exc))


def _collate(rows: list):
    import torch

    failed = next((r for r in rows if isinstance(r, _Failed)), None)
    return failed if failed is not None else torch.stack(rows)


def preprocessed_batches(backbone: Backbone, dataset: ClassificationDataset,
                         batches: Sequence[Sequence[ImageItem]], workers: int | None = None
                         ) -> Iterator[torch.Tensor]:
    """Each batch of items as one preprocessed tensor [B, 3, H, W], in the order given.

    With no worker (or one batch only, where a process would cost more than it saves) decoding runs here.
    Workers are forked (Linux), so a backbone's transform needs no pickling; where fork is unavailable the
    pipeline decodes in this process.
    """
    import torch
    from torch.utils.data import DataLoader

    flat = [it for batch in batches for it in batch]
    index_batches, start = [], 0
    for batch in batches:
        index_batches.append(list(range(start, start + len(batch))))
        start += len(batch)
    n_workers = default_workers() if workers is None else workers
    if len(index_batches) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        n_workers = 0
    n_workers = min(n_workers, len(index_batches))
    cuda = str(getattr(backbone.config, "device", "cpu")).startswith("cuda") and torch.cuda.is_available()
    loader = DataLoader(_Images(backbone, dataset, flat), batch_sampler=index_batches, collate_fn=_collate,
                        num_workers=n_workers, pin_memory=cuda, prefetch_factor=4 if n_workers else None,
                        multiprocessing_context="fork" if n_workers else None)
    for batch in loader:
        if isinstance(batch, _Failed):
            from harness.errors import DataMissingError

            raise DataMissingError(batch.message)
        yield batch
