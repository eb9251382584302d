"""The feature store at scale: compact dtype, LRU eviction within the budget, hashes remembered across runs,
feature sets that stream or recompute instead of holding a split, and a decode pipeline that keeps the order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.api import JobContext
from harness.config import BackboneConfig
from harness.data.cache import FeatureCache, cache_info, clear_cache, forget_ledgers, round_to_store
from harness.errors import DataMissingError, HarnessError
from harness.plan.planner import open_dataset

FP = {"backbone": "resnet", "variant": "tiny", "weights": "random(seed=0,init=v2)"}


def entry_bytes(cache: FeatureCache, sha: str) -> int:
    return cache.path(sha).stat().st_size


# -- the store -------------------------------------------------------------------------------------------


def test_fp16_store_halves_the_bytes_and_rounds_like_torch():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 100
    c32, c16 = FeatureCache(FP, "global", dtype="fp32"), FeatureCache(FP, "global", dtype="fp16")
    assert c32.dir != c16.dir  # a store dtype is part of the address
    c32.put("aa" * 32, x)
    c16.put("aa" * 32, x)
    got = c16.get("aa" * 32)
    assert got.dtype == torch.float16 and torch.equal(got, x.half())
    assert entry_bytes(c16, "aa" * 32) < 0.6 * entry_bytes(c32, "aa" * 32)
    bf = round_to_store({"L0": x.view(10, 10, 10)}, "bf16")["L0"]
    assert bf.dtype == torch.bfloat16 and torch.equal(bf, x.view(10, 10, 10).bfloat16())


def test_fp16_overflow_is_an_error_that_names_the_way_out():
    with pytest.raises(HarnessError, match="fp16 range.*bf16"):
        round_to_store(torch.tensor([1.0, 70000.0]), "fp16")
    assert torch.isinf(round_to_store(torch.tensor([float("inf")]), "fp16")).all()  # inf stays inf, no error


def test_budget_is_kept_by_evicting_the_least_recently_used(monkeypatch):
    one = torch.ones(2500)  # 10 kB + header per entry
    monkeypatch.setenv("HARNESS_CACHE_BUDGET_GB", str(100_000 / 2**30))  # room for 9 entries
    cache = FeatureCache(FP, "global")
    shas = [f"{i:02x}" * 32 for i in range(30)]
    for i, sha in enumerate(shas[:8]):
        assert cache.put(sha, one * i)
    reader = FeatureCache(FP, "global")  # a later job: its first read of an entry marks it used
    assert reader.get(shas[0]) is not None
    for sha in shas[8:]:
        assert cache.put(sha, one)
        total = sum(p.stat().st_size for p in cache.root.rglob("*.safetensors"))
        assert total <= 100_000
    left = {p.stem for p in cache.root.rglob("*.safetensors")}
    assert shas[-1] in left and shas[1] not in left  # oldest unused went first
    assert cache.stats.evicted >= 20
    assert sum(r["bytes"] for r in cache_info()) == sum(p.stat().st_size for p in cache.root.rglob("*.safetensors"))


def test_ledger_is_rebuilt_from_the_tree_and_entries_are_counted_per_namespace():
    a, b = FeatureCache(FP, "global"), FeatureCache({**FP, "backbone": "dino"}, "global", dtype="fp16")
    a.put("01" * 32, torch.ones(10))
    b.put("02" * 32, torch.ones(10))
    b.put("03" * 32, torch.ones(10))
    forget_ledgers()
    (a.root / "ledger.sqlite").unlink()  # lost bookkeeping: one walk rebuilds it
    rows = {r["backbone"]: r for r in cache_info()}
    assert rows["resnet:tiny"]["entries"] == 1 and rows["dino:tiny"]["entries"] == 2
    assert rows["dino:tiny"]["dtype"] == "fp16"
    freed = clear_cache(backbone="dino")
    assert freed > 0 and [r["backbone"] for r in cache_info()] == ["resnet:tiny"]
    assert a.get("01" * 32) is not None


def test_ledger_total_follows_every_write_rewrite_eviction_and_drop(monkeypatch):
    import sqlite3

    monkeypatch.setenv("HARNESS_CACHE_BUDGET_GB", str(60_000 / 2**30))
    a, b = FeatureCache(FP, "global"), FeatureCache({**FP, "backbone": "dino"}, "global")

    def on_disk() -> int:
        return sum(p.stat().st_size for p in a.root.rglob("*.safetensors"))

    for i in range(12):  # 10 kB entries into a 60 kB budget: evictions on the way
        (a if i % 2 else b).put(f"{i:02x}" * 32, torch.ones(2500) * i)
        assert a.ledger.total() == on_disk() <= 60_000
    a.put("0b" * 32, torch.ones(100))  # a rewrite replaces its old size
    a.ledger.forget(a._rel("0b" * 32))
    a.path("0b" * 32).unlink()
    assert a.ledger.total() == on_disk()
    clear_cache(backbone="dino")
    assert a.ledger.total() == on_disk() > 0
    forget_ledgers()
    with sqlite3.connect(a.root / "ledger.sqlite") as conn:  # a ledger written before totals existed
        conn.executescript("DROP TRIGGER entries_added; DROP TRIGGER entries_removed; DROP TABLE totals;")
    assert FeatureCache(FP, "global").ledger.total() == on_disk()


def test_a_write_that_fails_streams_instead_of_crashing(monkeypatch):
    import harness.data.cache

    def full_disk(path, data, durable=True):
        raise OSError(28, "No space left on device")

    cache = FeatureCache(FP, "global")  # namespace.json written; then the disk fills up
    monkeypatch.setattr(harness.data.cache, "atomic_write_bytes", full_disk)
    assert not cache.put("04" * 32, torch.ones(10)) and cache.stats.streamed == 1
    assert cache.get("04" * 32) is None and cache_info()[0]["entries"] == 0  # the ledger forgot it too


# -- file hashes -----------------------------------------------------------------------------------------


def test_file_hashes_are_remembered_across_processes_until_the_file_changes(tmp_path, monkeypatch):
    import hashlib
    import os

    import harness.data.hashindex as hashindex

    path = tmp_path / "img.bin"
    path.write_bytes(b"abc" * 1000)
    reads = []
    real = hashindex.sha256_file
    monkeypatch.setattr(hashindex, "sha256_file", lambda p: reads.append(p) or real(p))
    assert hashindex.file_sha256_cached(path) == hashlib.sha256(b"abc" * 1000).hexdigest()
    hashindex.forget_process_memory()  # as a new process would start
    assert hashindex.file_sha256_cached(path) == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert len(reads) == 1 and hashindex.index_path().is_file()
    path.write_bytes(b"xyz" * 1000)  # same size, new content and mtime
    os.utime(path, ns=(1, 1))
    assert hashindex.file_sha256_cached(path) == hashlib.sha256(b"xyz" * 1000).hexdigest() and len(reads) == 2


# -- feature sets ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet64():
    from backbones.resnet import ResNetBackbone

    return ResNetBackbone(BackboneConfig(name="resnet", variant="tiny", batch_size=8, dtype="fp64",
                                         feature_dtype="fp32"))


def direct(backbone, dataset, items, kind):
    """The oracle: the backbone called on each image alone, no store, no pipeline."""
    out = []
    for it in items:
        feats = backbone.image_features(backbone.preprocess([dataset.load_image(it)]), kinds=(kind,))
        out.append(feats.global_[0] if kind == "global" else {k: v[0] for k, v in feats.dense.items()})
    return out


def test_a_set_that_does_not_fit_is_recomputed_and_streamed_not_stored(resnet64, tmp_path, monkeypatch):
    from harness.data.features import FeatureSet

    ds = open_dataset("mini_coop")
    items = ds.splits()["val"][:20]
    monkeypatch.setenv("HARNESS_CACHE_BUDGET_GB", str(50_000 / 2**30))  # dense maps of 20 images: far more
    ctx = JobContext(tmp_path)
    train = FeatureSet(resnet64, ds, items, ctx, "dense").prepare()
    assert train.mode == "recomputed" and not list(train.cache.dir.rglob("*.safetensors"))
    rows = train.rows(torch.tensor([5, 0, 19]))
    oracle = direct(resnet64, ds, [items[5], items[0], items[19]], "dense")
    for k in rows:
        assert torch.equal(rows[k], torch.stack([o[k] for o in oracle]))
    test = FeatureSet(resnet64, ds, items, ctx, "dense")
    batches = list(test.batches(7))
    assert [len(next(iter(b.values()))) for b in batches] == [7, 7, 6] and test.mode == "streamed"
    assert not list(test.cache.dir.rglob("*.safetensors"))
    oracle = direct(resnet64, ds, items, "dense")
    for k in batches[0]:
        assert torch.equal(torch.cat([b[k] for b in batches]), torch.stack([o[k] for o in oracle]))


def test_a_set_that_fits_is_stored_once_and_read_back(resnet64, tmp_path):
    from harness.data.features import FeatureSet

    ds = open_dataset("mini_coop")
    items = ds.splits()["val"][:20] + ds.splits()["val"][:3]  # a file listed twice is one entry
    ctx = JobContext(tmp_path)
    first = FeatureSet(resnet64, ds, items, ctx, "global").prepare()
    assert first.mode == "stored" and ctx.counters["images_extracted"] == 20
    assert len(list(first.cache.dir.rglob("*.safetensors"))) == 20
    again = FeatureSet(resnet64, ds, items, JobContext(tmp_path), "global")
    got = again.matrix()
    assert again.ctx.counters.get("images_extracted", 0) == 0
    assert np.array_equal(got, torch.stack(direct(resnet64, ds, items, "global")).float().numpy())


def test_decode_workers_give_the_same_batches_in_the_same_order(resnet64):
    from harness.data.inputs import preprocessed_batches

    ds = open_dataset("mini_coop")
    items = ds.splits()["test"][:40]
    batches = [items[i:i + 6] for i in range(0, 40, 6)]
    inline = list(preprocessed_batches(resnet64, ds, batches, workers=0))
    forked = list(preprocessed_batches(resnet64, ds, batches, workers=2))
    assert [b.shape[0] for b in forked] == [6] * 6 + [4]
    assert all(torch.equal(a, b) for a, b in zip(inline, forked, strict=True))
    assert torch.equal(inline[1], resnet64.preprocess([ds.load_image(it) for it in batches[1]]))


def test_a_bad_image_in_a_worker_is_one_line_naming_the_file(resnet64):
    from harness.data.inputs import preprocessed_batches

    ds = open_dataset("mini_coop")
    items = ds.splits()["test"][:12]
    ds.image_path(items[9]).write_bytes(b"not an image")
    with pytest.raises(DataMissingError) as info:
        list(preprocessed_batches(resnet64, ds, [items[:6], items[6:]], workers=2))
    message = str(info.value)
    assert str(ds.image_path(items[9])) in message and "\n" not in message and "Traceback" not in message


def test_workers_setting_is_validated(monkeypatch):
    from harness.data.inputs import default_workers
    from harness.errors import ConfigError

    monkeypatch.setenv("HARNESS_WORKERS", "3")
    assert default_workers() == 3
    monkeypatch.setenv("HARNESS_WORKERS", "many")
    with pytest.raises(ConfigError, match="HARNESS_WORKERS"):
        default_workers()


def test_a_streamed_batch_of_big_dense_maps_is_capped_by_bytes_not_rows(tmp_path):
    """sd15 at 256 px: 5.6 MB of float32 maps per image, so a 256-row prediction batch would be 1.4 GB; the
    set hands out at most MAX_BATCH_BYTES per batch, from the backbone's declared shapes (no probe pass)."""
    from backbones.synthetic import SyntheticBackbone
    from harness.data.features import MAX_BATCH_BYTES, FeatureSet

    bb = SyntheticBackbone(BackboneConfig(name="synthetic", variant="sd15-256", batch_size=8))
    ds = open_dataset("mini_coop")
    items = ds.splits()["val"][:48]
    ctx = JobContext(tmp_path)
    fs = FeatureSet(bb, ds, items, ctx, "dense")
    per_image = 5_652_480  # bytes of float32 maps per image (SD 1.5's four levels at 256 px)
    assert fs.rows_per_batch(256) == MAX_BATCH_BYTES // per_image == 47
    sizes = [len(b["L3"]) for b in fs.batches(256)]
    assert sizes == [47, 1] and ctx.counters.get("images_recomputed", 0) == 0


def test_recent_entries_are_bounded_and_never_stale(monkeypatch):
    import os

    import harness.data.cache as hc

    monkeypatch.setattr(hc, "RECENT_BYTES", 5 * 4000)  # room for five 4 kB entries
    monkeypatch.setattr(hc, "_RECENT", hc.OrderedDict())
    monkeypatch.setattr(hc, "_RECENT_SIZE", [0])
    cache = FeatureCache(FP, "global")
    shas = [f"{i:02x}" * 32 for i in range(12)]
    for i, sha in enumerate(shas):
        cache.put(sha, torch.full((1000,), float(i)))
        assert cache.get(sha) is not None
        assert hc._RECENT_SIZE[0] == sum(hc.payload_bytes(p) for p in hc._RECENT.values()) <= 5 * 4000
    assert len(hc._RECENT) == 5
    cache.put(shas[-1], torch.full((1000,), -1.0))  # rewritten on disk: the remembered copy must not be served
    os.utime(cache.path(shas[-1]), ns=(10**18, 10**18))  # even within one mtime tick a new mtime is a new key
    assert torch.equal(cache.get(shas[-1]), torch.full((1000,), -1.0))
