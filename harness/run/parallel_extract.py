"""Data-parallel feature extraction: one large dataset split over several workers, merged by the feature cache.

The dataset's images are listed once (every split, each image content once), cut into contiguous shards,
and each worker builds the backbone and writes its shard's features into the content-addressed
`FeatureCache` through the same functions a job uses (`harness.data.features.lookup` / `compute_missing`).
There is no merge step: the cache is the merge, and a later `harness run` reads every image as a hit.

Why the result is bit-identical to one worker's:

* Batches are fixed by a grid over the whole listing (batch k = images k*B .. k*B+B-1, B the backbone's
  batch size), and shard boundaries fall on grid lines, so every image is computed in the same batch
  whatever the worker count. This matters: on the CPU, Vermouth tiny gives last-bit differences for an
  image computed in a batch of 32 vs one of 8. (Already cached images are dropped from their grid batch,
  not refilled from the next one, so this holds for a partly warm cache too.)
* Every worker runs with the same torch thread count, whatever the number of workers: 1 on the CPU by
  default (`threads=` pins another). The count matters: Vermouth tiny's features differ in the last bit
  between 2 and 3 threads, so "the cores split over the workers" would make the bits depend on the
  worker count. (One single-threaded worker per core is also the efficient CPU layout.) On a GPU the CPU
  only decodes and preprocesses, so there the CPUs are split over the workers.
* Files with the same bytes share one cache entry, so the driver hashes the listing and keeps the first of
  each content: two shards never compute one entry in two different batches.
* Entries are written atomically one by one, so a killed or failed shard leaves whole entries only, and
  running the same command again extracts just what is missing.

Workers are spawned processes (`executor="processes"`; a single shard runs in the calling process) or Ray
tasks (`executor="ray"`, the optional extra, connected through `harness.run.ray_support.init_ray`).
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.api import ClassificationDataset, ImageItem
from harness.config import BackboneConfig
from harness.errors import ConfigError, HarnessError

EXECUTORS = ("processes", "ray")


@dataclass(frozen=True)
class Shard:
    """One worker's share: a contiguous run of whole grid batches of the listing, each image with its sha256."""

    index: int
    count: int
    config: BackboneConfig
    dataset: str
    kinds: tuple[str, ...]
    images: list[tuple[ImageItem, str]]
    threads: int | None = None


@dataclass
class ShardResult:
    index: int
    images: int
    extracted: dict[str, int] = field(default_factory=dict)  # per kind
    cached: dict[str, int] = field(default_factory=dict)  # per kind: verified entries that were already there
    streamed: int = 0  # computed but not stored (cache budget spent)
    namespaces: dict[str, str] = field(default_factory=dict)  # per kind: the cache folder written to
    seconds: float = 0.0


@dataclass
class ExtractSummary:
    backbone: str
    dataset: str
    kinds: tuple[str, ...]
    items: int  # paths listed
    images: int  # distinct image contents among them (what is extracted)
    shards: int
    workers: int
    executor: str
    extracted: int = 0  # summed over kinds
    cached: int = 0
    streamed: int = 0
    namespaces: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    per_shard: list[ShardResult] = field(default_factory=list)


# -- what to extract -------------------------------------------------------------------------------------


def dataset_items(dataset: Any, split: str | Sequence[str] | None = None) -> list[ImageItem]:
    """The items of the asked splits (default: all), in split order, each path once.

    Only datasets whose jobs extract whole images can be prewarmed: classification-style datasets (FSC, and
    SBIR's sketch/photo lists). OVSS caches features of crops and sliding windows whose geometry comes from
    the protocol (crop size, scales, seeds), so only a run itself knows which inputs to compute.
    """
    if not isinstance(dataset, ClassificationDataset):
        raise ConfigError(f"dataset '{dataset.name}' ({dataset.task_family}) cannot be prewarmed: only datasets "
                          "whose jobs extract whole images (fsc, sbir) can; its jobs cache features of crops and "
                          "windows that depend on the protocol, and compute them as they run")
    splits = dataset.splits()
    wanted = list(splits) if split is None else [split] if isinstance(split, str) else list(split)
    unknown = [s for s in wanted if s not in splits]
    if unknown:
        raise ConfigError(f"dataset '{dataset.name}' has no split {', '.join(map(repr, unknown))}; "
                          f"its splits: {', '.join(splits)}")
    return list({it.path: it for s in wanted for it in splits[s]}.values())


def unique_images(dataset: ClassificationDataset, items: Sequence[ImageItem], threads: int = 8
                  ) -> list[tuple[ImageItem, str]]:
    """The items with their image file's sha256, the first of each content only (files hashed by `threads`).

    Files with the same bytes share one cache entry. Listed twice, they could be computed in two shards, in
    two different batches, and the entry would hold whichever worker wrote last: not deterministic.
    """
    from concurrent.futures import ThreadPoolExecutor

    from harness.data.weights import file_sha256

    with ThreadPoolExecutor(max_workers=threads) as pool:  # I/O and hashlib release the GIL
        shas = list(pool.map(lambda it: file_sha256(dataset.image_path(it)), items))
    first: dict[str, tuple[ImageItem, str]] = {}
    for it, sha in zip(items, shas, strict=True):
        first.setdefault(sha, (it, sha))
    return list(first.values())


def plan_shards(n_items: int, batch_size: int, workers: int) -> list[tuple[int, int]]:
    """`[start, end)` item ranges: at most `workers` contiguous runs of whole batches, balanced to one batch."""
    if workers < 1 or batch_size < 1:
        raise ConfigError(f"workers and batch size must be >= 1, got {workers} and {batch_size}")
    n_batches = -(-n_items // batch_size)
    count = min(workers, n_batches)
    ranges = []
    for i in range(count):
        first, last = i * n_batches // count, (i + 1) * n_batches // count
        ranges.append((first * batch_size, min(last * batch_size, n_items)))
    return ranges


# -- one worker ------------------------------------------------------------------------------------------


def run_shard(shard: Shard) -> ShardResult:
    """Build the backbone and write every missing feature of the shard into the cache (runs in a worker)."""
    import torch

    from harness.data.cache import FeatureCache
    from harness.data.features import batched, compute_missing, lookup
    from harness.plan.planner import open_dataset
    from harness.run.executor import build_backbone

    start = time.perf_counter()
    dataset = open_dataset(shard.dataset, generate=False)  # a data problem shows before a model is loaded
    if shard.threads:
        torch.set_num_threads(shard.threads)
    backbone = build_backbone(shard.config)
    fingerprint = backbone.fingerprint()
    result = ShardResult(index=shard.index, images=len(shard.images))
    for kind in shard.kinds:
        cache = FeatureCache(fingerprint, kind, dtype=shard.config.feature_dtype)
        batches = []
        for grid_batch in batched(shard.images, backbone.batch_size):  # the shard starts on a grid line
            missing = []
            for (it, sha, hit), (_, listed) in zip(lookup(cache, dataset, [it for it, _ in grid_batch]), grid_batch,
                                                   strict=True):
                if sha != listed:  # its duplicates, dropped by the driver, would read another content's entry
                    raise HarnessError(f"dataset '{dataset.name}': {dataset.image_path(it)} changed during the "
                                       "extraction; run the command again")
                if hit is None:
                    missing.append((it, sha))
            if missing:
                batches.append(missing)
        done = sum(1 for _ in compute_missing(backbone, dataset, batches, kind, cache))
        result.extracted[kind] = done
        result.cached[kind] = len(shard.images) - done
        result.streamed += cache.stats.streamed
        result.namespaces[kind] = cache.namespace
    result.seconds = time.perf_counter() - start
    return result


class ShardFailed(HarnessError):
    """A worker's error, carried back as its message: exceptions with their own constructor arguments (most
    of ours) do not unpickle, and an error that cannot be unpickled would break the pool instead."""


def _worker(shard: Shard) -> ShardResult:
    """`run_shard` in a spawned process or a Ray task."""
    try:
        return run_shard(shard)
    except Exception as exc:
        detail = "" if isinstance(exc, HarnessError) else "\n" + traceback.format_exc()
        raise ShardFailed(f"{type(exc).__name__}: {exc}{detail}") from None


# -- the driver ------------------------------------------------------------------------------------------


def _local_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _worker_device(device: str, index: int, executor: str) -> str:
    """Plain `cuda` is spread over the visible GPUs (worker i on GPU i mod n); Ray assigns one per task itself.
    The device is not part of any backbone's fingerprint, so the cache namespace is the same on every GPU."""
    if not device.startswith("cuda"):
        return device
    if executor == "ray":
        return "cuda"
    if device != "cuda":
        return device
    import torch

    n = torch.cuda.device_count()
    return f"cuda:{index % n}" if n > 1 else device


def _run_here(shard: Shard) -> ShardResult:
    """One shard needs no other process: run it in this one (its thread count restored afterwards)."""
    import torch

    before = torch.get_num_threads()
    try:
        return run_shard(shard)
    finally:
        torch.set_num_threads(before)


def _run_processes(shards: list[Shard]) -> tuple[list[ShardResult], list[str]]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    results, errors = [], []
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold torch threads or CUDA
    with ProcessPoolExecutor(max_workers=len(shards), mp_context=ctx) as pool:
        futures = [pool.submit(_worker, s) for s in shards]
        for shard, fut in zip(shards, futures, strict=True):
            try:
                results.append(fut.result())
            except ShardFailed as exc:
                errors.append(f"shard {shard.index + 1}/{shard.count}: {exc}")
            except Exception as exc:  # the worker died (BrokenProcessPool)
                errors.append(f"shard {shard.index + 1}/{shard.count}: {type(exc).__name__}: {exc}")
    return results, errors


def worker_threads(device: str, workers: int, cpus: int, threads: int | None = None) -> int:
    """Torch threads per worker: `threads` if given; on the CPU 1, independent of the worker count (see the
    module doc: the count changes Vermouth's bits); on a GPU the `cpus` split over the workers."""
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads per worker must be >= 1, got {threads}")
        return threads
    return max(1, cpus // max(1, workers)) if device.startswith("cuda") else 1


def _ray_cpus(ray: Any) -> int:
    """The largest node's CPUs: a task asking for more would never be scheduled."""
    return int(max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1))


def _run_ray(shards: list[Shard], ray: Any) -> tuple[list[ShardResult], list[str]]:
    """One Ray task per shard, asking for its threads as CPUs (and one GPU on a cuda device). Ray retries a task
    whose worker died; that is safe, since a rerun only computes what the dead one had not written."""
    gpus = 1 if shards[0].config.device.startswith("cuda") else 0
    remote = ray.remote(num_cpus=shards[0].threads or 1, num_gpus=gpus)(_worker)
    futures = [remote.remote(s) for s in shards]
    results, errors = [], []
    for shard, fut in zip(shards, futures, strict=True):
        try:
            results.append(ray.get(fut))
        except Exception as exc:  # RayTaskError wraps the worker's ShardFailed; a lost worker has no cause
            cause = getattr(exc, "cause", None) or exc
            what = str(cause) if isinstance(cause, ShardFailed) else f"{type(cause).__name__}: {cause}"
            errors.append(f"shard {shard.index + 1}/{shard.count}: {what}")
    return results, errors


def extract_dataset(config: BackboneConfig, dataset_name: str, kinds: Sequence[str] = ("global",),
                    split: str | Sequence[str] | None = None, workers: int = 1, executor: str = "processes",
                    address: str | None = None, threads: int | None = None) -> ExtractSummary:
    """Fill the feature cache for every image of `dataset_name` with `workers` parallel workers.

    `threads`: torch threads per worker (default: 1 on the CPU, the CPUs split over the workers on a GPU).
    Raises HarnessError naming the failed shards if any failed; what the others wrote is kept.
    """
    from harness.catalog import BACKBONES
    from harness.plan.planner import open_dataset

    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor '{executor}'; known: {', '.join(EXECUTORS)}")
    kinds = tuple(dict.fromkeys(kinds))
    supported = BACKBONES.get(config.name).feature_kinds
    bad = [k for k in kinds if k not in supported]
    if bad or not kinds:
        raise ConfigError(f"feature kind(s) {', '.join(bad) or '(none)'} not offered by backbone '{config.name}'; "
                          f"it offers: {', '.join(supported)}")
    start = time.perf_counter()
    dataset = open_dataset(dataset_name)  # generates embedded data here, once, before any worker reads it
    dataset.verify()
    items = dataset_items(dataset, split)
    images = unique_images(dataset, items, threads=min(32, 4 * _local_cpus()))
    ranges = plan_shards(len(images), config.batch_size, workers)
    ray, started_ray = _connect(address) if executor == "ray" and ranges else (None, False)
    try:
        cpus = _ray_cpus(ray) if ray is not None else _local_cpus()
        threads = worker_threads(config.device, len(ranges), cpus, threads)
        if ray is not None and threads > cpus:
            raise ConfigError(f"{threads} threads per worker, but the largest Ray node has {cpus} CPUs")
        shards = [Shard(index=i, count=len(ranges), dataset=dataset_name, kinds=kinds, images=images[a:b],
                        threads=threads,
                        config=config.model_copy(update={"device": _worker_device(config.device, i, executor)}))
                  for i, (a, b) in enumerate(ranges)]
        results, errors = _dispatch(shards, ray)
    finally:
        if started_ray:
            ray.shutdown()  # a Ray this call started (or connected to) is not left behind
    if errors:
        raise HarnessError(f"{len(errors)} of {len(shards)} shard(s) failed (the entries written are whole and "
                           "kept; run the same command again to extract only what is missing):\n"
                           + "\n".join(errors))
    return ExtractSummary(
        backbone=f"{config.name}:{config.variant}", dataset=dataset_name, kinds=kinds, items=len(items),
        images=len(images), shards=len(shards), workers=workers, executor=executor,
        extracted=sum(sum(r.extracted.values()) for r in results),
        cached=sum(sum(r.cached.values()) for r in results), streamed=sum(r.streamed for r in results),
        namespaces=_one_namespace_per_kind(results), seconds=time.perf_counter() - start,
        per_shard=sorted(results, key=lambda r: r.index))


def _connect(address: str | None) -> tuple[Any, bool]:
    """Ray, connected through `init_ray`, and whether this call did the connecting (so it also disconnects)."""
    from harness.run.ray_support import init_ray, require_ray

    started = not require_ray().is_initialized()
    return init_ray(address), started


def _dispatch(shards: list[Shard], ray: Any) -> tuple[list[ShardResult], list[str]]:
    """Ray tasks when connected; else this process for a single shard, spawned processes for several."""
    if ray is not None:
        return _run_ray(shards, ray)
    if len(shards) == 1:
        return [_run_here(shards[0])], []
    return _run_processes(shards) if shards else ([], [])


def _one_namespace_per_kind(results: list[ShardResult]) -> dict[str, str]:
    """The cache folder per kind; every worker must have written to the same one."""
    namespaces: dict[str, str] = {}
    for r in results:
        for kind, ns in r.namespaces.items():
            if namespaces.setdefault(kind, ns) != ns:
                raise HarnessError(f"workers disagree on the backbone fingerprint ({kind}: {namespaces[kind]} vs "
                                   f"{ns}): the backbone's fingerprint is not deterministic")
    return namespaces


# -- the backbone configs a run would use ----------------------------------------------------------------


def suite_for_dataset(dataset_name: str) -> str:
    """The first built-in suite that lists the dataset (`mini` for the embedded ones, `all` for the real)."""
    from harness.plan.suites import builtin_suites, load_suite

    for name in builtin_suites():
        if any(dataset_name in e.datasets for e in load_suite(name).entries):
            return name
    raise ConfigError(f"no built-in suite lists dataset '{dataset_name}'; pass --suite with the suite you will run")


def backbone_configs(backbones: list[str], suite: str, variant: str | None = None, weights: str | None = None,
                     device: str | None = None, dtype: str | None = None, batch_size: int | None = None,
                     options: dict[str, Any] | None = None, feature_dtype: str | None = None,
                     dataset: str | None = None) -> list[BackboneConfig]:
    """Exactly the configs `harness run --suite SUITE` builds with the same flags (planner.backbone_config),
    one per backbone, backbone-grid point and suite entry that lists `dataset` (each task has its own preset;
    every entry when no dataset is given), so the cache namespaces are the ones the run will read."""
    from harness.config import RunConfig, validate
    from harness.plan.planner import backbone_config, backbone_option_points, resolve_backbones
    from harness.plan.suites import load_suite

    spec = load_suite(suite)
    run = validate(RunConfig, {"suite": spec.name, "backbones": backbones, "variant": variant, "weights": weights,
                               "device": device, "dtype": dtype, "batch_size": batch_size,
                               "feature_dtype": feature_dtype, "backbone_options": options or {}}, "command line")
    # An entry reads a dataset it lists or names in its protocol (OVSS's `train_dataset`).
    entries = [e for e in spec.entries if dataset is None or dataset in e.datasets
               or dataset in (v for v in e.protocol.values() if isinstance(v, str))] or [None]
    configs = [backbone_config(name, run, spec, point, entry) for name in resolve_backbones(run.backbones)
               for point in backbone_option_points(run, spec) for entry in entries]
    return list(dict.fromkeys(configs))  # entries of one task (or equal presets) share a config
