"""Feature store writes at real entry counts: `FeatureCache.put` into a store that already holds 0 or 100,000
entries, next to a plain reference (the same safetensors bytes written to a temp file and renamed, no ledger).

Why: at GPU rates the main process's store write, not decoding, bounds a stored extraction (see
`test_decode_overlap.py`). A put must cost the same whatever the store holds (the budget check reads one
total, it does not sum the table), and close to the plain write (the ledger's transaction is the only extra).
Entries: a CLIP ViT-B/16 global feature (512 numbers, fp16 store), the kind a 130k-image CoOp-11 run stores.
Asserted: every put is stored and the ledger's total equals the bytes on disk (behaviour, not speed); the
ratios are reported, not asserted.

Measured on 2026-12-02 (2 cores, other jobs running on both), this file against the commit before the change
(6b3fdb9: `SUM(bytes)` over the ledger and an fsync per put) and after it, one run each:
  before: 0.76 ms per put into an empty store, 19.2 ms at 100,000 entries (52 puts/s; ×25 the empty cost);
  after:  0.57 ms empty, 0.34 ms at 100,000 entries (2,930 puts/s; ×0.6: flat), plain write 0.10 ms.
At GPU extraction rates (thousands of images/s) the old put bounded a stored extraction at ~50 images/s once
the store held a CoOp-11 split; now the main process's store write costs about as much as decoding one image.
"""

from __future__ import annotations

import time

import torch
from _bench import bench_median, report

FP = {"backbone": "clip", "variant": "vit-b-16", "weights": "bench"}
PUTS = 500
EXISTING = 100_000


def _fill_ledger(cache, n: int) -> None:
    """`n` ledger rows of 1 kB entries (bookkeeping only: a store of that many entries, without writing them)."""
    rows = [(f"{cache.namespace}/zz/{i:064x}.safetensors", cache.namespace, 1024, float(i)) for i in range(n)]
    conn = cache.ledger.conn
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO entries VALUES (?, ?, ?, ?)", rows)
    conn.execute("COMMIT")


def _puts(cache, tag: str) -> float:
    """Seconds per put of PUTS fresh entries."""
    x = torch.randn(PUTS, 512, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    for i in range(PUTS):
        assert cache.put(f"{tag}{i:060x}", x[i])
    return (time.perf_counter() - start) / PUTS


def _plain_writes(root, tag: str) -> float:
    """Seconds per entry for the floor: serialise, write a temp file, rename (what a put does minus the ledger)."""
    import os

    from safetensors.torch import save

    x = torch.randn(PUTS, 512, generator=torch.Generator().manual_seed(0)).half()
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i in range(PUTS):
        path = root / f"{tag}{i:060x}.safetensors"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(save({"global": x[i].contiguous()}))
        os.replace(tmp, path)
    return (time.perf_counter() - start) / PUTS


def test_store_put_cost_does_not_grow_with_the_store(benchmark, tmp_path):
    from harness.data.cache import FeatureCache

    cache = FeatureCache(FP, "global", root=tmp_path / "store", dtype="fp16")
    empty_s = _puts(cache, "aaaa")
    _fill_ledger(cache, EXISTING)
    rounds = iter(range(100))
    full_s = benchmark.pedantic(lambda: _puts(cache, f"b{next(rounds):03d}"), rounds=3, iterations=1)
    full_s = bench_median(benchmark) / PUTS
    plain_s = _plain_writes(tmp_path / "plain", "cccc")
    on_disk = sum(p.stat().st_size for p in cache.dir.rglob("*.safetensors"))
    assert cache.ledger.total() == on_disk + EXISTING * 1024
    report(benchmark, "store put", put_ms_empty=empty_s * 1e3, put_ms_at_100k=full_s * 1e3,
           plain_write_ms=plain_s * 1e3, at_100k_vs_empty=full_s / empty_s, put_vs_plain=full_s / plain_s,
           puts_per_s_at_100k=1 / full_s)
