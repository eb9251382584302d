"""Decode/compute overlap: `harness extract --workers 2` (decode in 2 DataLoader processes) vs `--workers 0`.

Data: 480 photo-like 500×375 JPEGs at quality 90 (~50 KB each: smooth colour fields, shapes, sensor noise) in
Caltech-101's CoOp layout, read by the real `caltech101` reader (`scale_data.decode_overlap_data`, generated
once and cached). Backbone: `synthetic` `vit-l-14` at 224 px, `--kind global`, the cheapest model the
harness has at that size (its global feature is one pooled statistic and a 6→768 projection; still ≈ 5 ms per
image on one CPU thread, because the statistic is taken in float64 over the whole 224 px image, so on a CPU
this is not yet the decode-bound regime of a GPU model: the shares below say how far). Each `harness extract`
runs as a user runs it (CLI in a subprocess, one shard, one torch thread, the `all` suite's batch of 64) on
an empty HARNESS_CACHE; two rounds alternate w0 and w2 and the faster of each is kept (one sample swings on a
shared machine). Throughput = images / the extraction time the command prints (start-up and imports excluded;
the subprocess wall time is reported beside it). Asserted: every image is extracted both ways, into the same
entries; w2 is not pathologically slower than w0 (≥ 0.5x: a guard against a pipeline that serialises, not a
target).

Also measured in-process over the same images, one thread: `dataset.load_image` (decode) and
`backbone.preprocess` (resize, crop, normalise) per image, `backbone.image_features` per batch of 64, and the
store write (`FeatureCache.put`: one fsync'd file and one sqlite ledger transaction per entry) per image.

Measured on 2026-12-02 on 2 cores, nothing else running (load average 1.5: this benchmark's own processes):
decode 1.1 ms, preprocess 2.4 ms, model 4.8 ms, store write 0.7 ms per image (decode + preprocess 42 % of
decode + preprocess + model, the model 58 %); extraction w0 98 images/s, w2 126 images/s, ratio 1.29. The
ratio is capped by this machine and this model, not by the pipeline: with decoding handed off, the main
process still runs the model (4.8 ms), writes the store (0.7 ms) and receives each batch, ≈ 8 ms per image
≈ 125 images/s, which is what w2 reached; and three processes (main + 2 workers) share two cores. An
earlier run with other jobs on both cores (load average 8-9) measured w0 59, w2 43 images/s (ratio 0.72),
decode + preprocess 4.4 ms, store write 2.2 ms (4.3 ms in a separate timing): on a busy 2-core machine,
extra decode processes only add contention.

GPU expectation, on paper, from these numbers: decode + preprocess of a 500×375 JPEG to 224 px costs
X ≈ 3.5 ms of one core here (less than the ~10 ms `harness.data.inputs` assumes), so N decode workers sustain
≈ N / X ≈ 285·N images/s. A ViT-B/16 at 224 px in bf16 on an H100-class GPU runs ≈ 3,000-5,000 images/s at
large batch; keeping it busy takes ≈ 11-18 decode workers (cores) at this speed, more than the pipeline's
default cap of 8 (`MAX_DEFAULT_WORKERS`: ≈ 2,300 images/s, the GPU ≈ 45-75 % busy), so pass `--workers 16`
or more on a host with the cores. A heavier model needs proportionally fewer (ViT-L/14 at ≈ 1,000 images/s:
4 workers; Vermouth sd15 at a few hundred: 1-2). The next serial cost is the main process's store write,
one fsync'd file and one ledger transaction per entry: 0.7 ms here on an idle disk (≈ 1,400 entries/s),
2-4 ms under load (250-450 entries/s), whatever the number of workers; at GPU rates it, not the decoder,
bounds a stored extraction (`harness extract`, and any `harness run` set that fits half the budget).
(Since then entries are no longer fsync'd and the ledger keeps its total in one row: a put costs ~0.3-0.6 ms
at any store size, `test_store_writes.py`; before, it grew to 19 ms at 100,000 entries.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _bench import report
from scale_data import decode_overlap_data

BACKBONE, VARIANT = "synthetic", "vit-l-14"
DATASET = "caltech101"
BATCH = 64  # the `all` suite's batch size, which `harness extract` uses for a real dataset
ROUNDS = 2
SUMMARY = re.compile(r": (\d+) images.*?: (\d+) extracted, (\d+) already cached, ([\d.]+) s")


def _extract(env: dict[str, str], cache: Path, workers: int) -> dict[str, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness", "extract", "-b", BACKBONE, "--variant", VARIANT,
                           "--dataset", DATASET, "--kind", "global", "--workers", str(workers)],
                          capture_output=True, text=True, env={**env, "HARNESS_CACHE": str(cache)}, timeout=900)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = SUMMARY.search(" ".join(proc.stdout.split()))
    assert found, proc.stdout[-2000:]
    images, extracted, cached, seconds = (int(found[1]), int(found[2]), int(found[3]), float(found[4]))
    entries = sorted(p.name for p in (cache / "features").rglob("*.safetensors"))
    return {"images": images, "extracted": extracted, "cached": cached, "seconds": seconds, "wall_s": wall,
            "images_per_s": images / seconds, "entries": entries}


def _in_process_shares(data: Path, store: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """Per-image decode, preprocess, model and store-write time over the dataset's images, in this process, one
    thread: what a w0 extraction does per image, part by part (the store write: `FeatureCache.put`, one fsync'd
    file and one ledger transaction per entry, into a scratch store)."""
    import torch

    from harness.catalog import BACKBONES
    from harness.config import BackboneConfig
    from harness.data.cache import FeatureCache, forget_ledgers
    from harness.data.weights import file_sha256
    from harness.plan.planner import open_dataset

    monkeypatch.setenv("HARNESS_DATA", str(data))
    dataset = open_dataset(DATASET, generate=False)
    items = [it for part in dataset.splits().values() for it in part]
    backbone = BACKBONES.get(BACKBONE)(BackboneConfig(name=BACKBONE, variant=VARIANT, device="cpu",
                                                      batch_size=BATCH))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each extract shard runs on the CPU
    try:
        with torch.inference_mode():
            backbone.image_features(backbone.preprocess([dataset.load_image(items[0])]), kinds=("global",))
        decode = preprocess = model = 0.0
        pixels, rows = [], []
        for it in items:
            t0 = time.perf_counter()
            image = dataset.load_image(it)
            t1 = time.perf_counter()
            pixels.append(backbone.preprocess([image])[0])
            t2 = time.perf_counter()
            decode, preprocess = decode + t1 - t0, preprocess + t2 - t1
        for s in range(0, len(pixels), BATCH):
            t0 = time.perf_counter()
            batch = torch.stack(pixels[s:s + BATCH])
            with torch.inference_mode():
                rows += list(backbone.image_features(batch, kinds=("global",)).global_)
            model += time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    cache = FeatureCache(backbone.fingerprint(), "global", root=store, dtype="fp16")
    shas = [file_sha256(dataset.image_path(it)) for it in items]
    t0 = time.perf_counter()
    for sha, row in zip(shas, rows, strict=True):
        cache.put(sha, row)
    put = time.perf_counter() - t0
    forget_ledgers()
    n, total = len(items), decode + preprocess + model
    return {"decode_ms": decode / n * 1e3, "preprocess_ms": preprocess / n * 1e3, "model_ms": model / n * 1e3,
            "store_put_ms": put / n * 1e3, "decode_preprocess_share": (decode + preprocess) / total,
            "model_share": model / total}


def test_decode_overlaps_compute(benchmark, tmp_path, monkeypatch):
    data = decode_overlap_data()
    env = {**os.environ, "HARNESS_HOME": str(tmp_path / "home"), "HARNESS_DATA": str(data), "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("HARNESS_WORKERS", None)
    runs: dict[int, list[dict]] = {0: [], 2: []}
    benchmark.group = "decode-overlap"
    for r in range(ROUNDS):
        runs[0].append(_extract(env, tmp_path / f"cache-w0-{r}", 0))
        if r == ROUNDS - 1:
            runs[2].append(benchmark.pedantic(_extract, args=(env, tmp_path / f"cache-w2-{r}", 2),
                                              rounds=1, iterations=1))
        else:
            runs[2].append(_extract(env, tmp_path / f"cache-w2-{r}", 2))
    best = {w: max(rs, key=lambda x: x["images_per_s"]) for w, rs in runs.items()}
    shares = _in_process_shares(data, tmp_path / "store-put", monkeypatch)
    w0, w2 = best[0], best[2]
    decode_preprocess_ms = shares["decode_ms"] + shares["preprocess_ms"]
    report(benchmark, f"decode overlap, {BACKBONE}:{VARIANT} global, {w0['images']} 500x375 JPEGs, extract w2 vs w0",
           images=w0["images"], cpus=os.cpu_count() or 0, load_avg_1m=os.getloadavg()[0],
           w0_images_per_s=w0["images_per_s"], w2_images_per_s=w2["images_per_s"],
           w2_to_w0_ratio=w2["images_per_s"] / w0["images_per_s"],
           w0_extract_s=w0["seconds"], w2_extract_s=w2["seconds"], w0_wall_s=w0["wall_s"], w2_wall_s=w2["wall_s"],
           w0_all_rounds_images_per_s=",".join(f"{x['images_per_s']:.1f}" for x in runs[0]),
           w2_all_rounds_images_per_s=",".join(f"{x['images_per_s']:.1f}" for x in runs[2]),
           **shares,
           decode_preprocess_ms=decode_preprocess_ms,
           images_per_s_per_decode_worker=1e3 / decode_preprocess_ms,
           workers_to_feed_3000_per_s=3000 / (1e3 / decode_preprocess_ms))
    for rs in runs.values():
        for x in rs:
            assert x["extracted"] == x["images"] == w0["images"] and x["cached"] == 0, x
            assert x["entries"] == w0["entries"]  # the same content-addressed entries, whatever the workers
    assert w2["images_per_s"] >= 0.5 * w0["images_per_s"], (w0, w2)
