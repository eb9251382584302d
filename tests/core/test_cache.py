import torch

from harness.data.cache import FeatureCache, cache_info, clear_cache, tensor_key

FP = {"backbone": "resnet", "variant": "tiny", "weights": "random(seed=0,init=v2)"}


def test_round_trip_global_and_dense():
    cache = FeatureCache(FP, "global")
    vec = torch.arange(5, dtype=torch.float32)
    assert cache.get("ab" * 32) is None
    assert cache.put("ab" * 32, vec)
    torch.testing.assert_close(cache.get("ab" * 32), vec, rtol=0, atol=0)
    dense = FeatureCache(FP, "dense")
    maps = {"L0": torch.randn(3, 2, 2), "L1": torch.randn(4, 1, 1)}
    dense.put("cd" * 32, maps)
    got = dense.get("cd" * 32)
    assert set(got) == {"L0", "L1"} and torch.equal(got["L0"], maps["L0"])
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)


def test_namespace_depends_on_fingerprint_and_kind():
    a, b, c = FeatureCache(FP, "global"), FeatureCache({**FP, "t": 200}, "global"), FeatureCache(FP, "dense")
    assert len({a.dir, b.dir, c.dir}) == 3


def test_corrupt_entry_is_detected_deleted_and_not_used():
    cache = FeatureCache(FP, "global")
    cache.put("ef" * 32, torch.ones(1000))
    path = cache.path("ef" * 32)
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF  # flip payload bits: safetensors still parses, the checksum does not match
    path.write_bytes(bytes(raw))
    assert cache.get("ef" * 32) is None and cache.stats.corrupt == 1 and not path.exists()
    cache.put("ef" * 32, torch.ones(1000))
    path.write_bytes(path.read_bytes()[:50])  # truncated
    assert cache.get("ef" * 32) is None and cache.stats.corrupt == 2


def test_budget_streams_instead_of_storing(monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_BUDGET_GB", str(6000 / 2**30))
    cache = FeatureCache(FP, "global")
    assert cache.put("01" * 32, torch.ones(100))  # ~500 bytes
    assert not cache.put("02" * 32, torch.ones(2000))  # would pass the 6000-byte budget
    assert cache.stats.streamed == 1 and cache.get("02" * 32) is None


def test_info_and_clear():
    FeatureCache(FP, "global").put("03" * 32, torch.ones(3))
    rows = cache_info()
    assert rows[0]["backbone"] == "resnet:tiny" and rows[0]["entries"] == 1
    assert clear_cache() > 0 and cache_info() == []


def test_fetch_computes_only_the_misses_in_one_batch_and_stores_them():
    cache = FeatureCache(FP, "dense:input")
    rows = torch.arange(12, dtype=torch.float32).view(4, 3)
    keys = [tensor_key(r) for r in rows]
    assert len(set(keys)) == 4 and tensor_key(rows[0].clone()) == keys[0]
    assert tensor_key(rows[0].double()) != keys[0]  # dtype is part of the identity
    cache.put(keys[1], rows[1] * 10)
    calls: list[list[int]] = []

    def compute(miss):
        calls.append(miss)
        return [rows[i] * 10 for i in miss]

    got = cache.fetch(keys, compute)
    assert calls == [[0, 2, 3]] and all(torch.equal(g, r * 10) for g, r in zip(got, rows, strict=True))
    assert cache.fetch(keys, compute) and calls == [[0, 2, 3]]  # all stored now: no second call
