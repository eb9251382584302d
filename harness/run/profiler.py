"""Latency, throughput, memory, parameters and FLOPs per backbone and batch size, measured the same way for all.

Each (backbone, batch size) runs in a fresh child process, so peak memory is that measurement's own:
CUDA max-allocated after a reset, or on the CPU the rise of the process's peak RSS over its RSS after
imports (the model's weights included). Timings are medians and p90s of timed repeats after warm-up,
with device synchronisation on CUDA; inputs are synthetic images through the backbone's own
preprocessing. A backbone may offer `stage_times(batch) -> {stage: seconds}` (Vermouth does) for the
share of time per stage.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from harness.catalog import BACKBONES
from harness.config import BackboneConfig, check_device_available, validate
from harness.data.memory import mark_peak, peak_rss_mb, rss_mb
from harness.errors import HarnessError, UnknownNameError
from harness.plan.planner import resolve_backbones, resolve_device


def measure(config: BackboneConfig, batch_size: int, warmup: int, repeats: int) -> dict[str, Any]:
    """Run in the current process (the child): build, warm up, time, count."""
    import numpy as np
    import torch
    from PIL import Image
    from torch.utils.flop_counter import FlopCounterMode

    from harness.catalog import BACKBONES

    cuda = config.device.startswith("cuda")
    cls = BACKBONES.get(config.name)  # library imports are not the model's memory
    rss_before = rss_mb()
    mark_peak()  # the peak from here on is the model's and its batches', not the imports'
    backbone = cls(config)
    if getattr(backbone, "latent_cache", None) is not None:
        backbone.latent_cache = None  # every repeat encodes: the profile times the VAE, not a cache read
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8))
    one = backbone.preprocess([image])
    batch = one.repeat(batch_size, 1, 1, 1)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    for _ in range(warmup):
        backbone.image_features(batch, kinds=("global",))
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        backbone.image_features(batch, kinds=("global",))
        sync()
        times.append(time.perf_counter() - start)
    with FlopCounterMode(display=False) as counter:
        backbone.image_features(one, kinds=("global",))
    model = getattr(backbone, "model", None)
    params = getattr(backbone, "param_count", None)
    if params is None and isinstance(model, torch.nn.Module):
        params = sum(p.numel() for p in model.parameters())
    median = statistics.median(times)
    row = {
        "backbone": config.name, "variant": config.variant, "device": config.device, "dtype": config.dtype,
        "batch_size": batch_size, "input_size": list(one.shape[1:]), "repeats": repeats, "warmup": warmup,
        "latency_median_s": median, "latency_p90_s": float(np.percentile(times, 90)),
        "images_per_s": batch_size / median, "latency_per_image_ms": 1000 * median / batch_size,
        "params": params, "gflops_per_image": counter.get_total_flops() / 1e9,
        "peak_memory_mb": (torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mb() - rss_before),
        "memory_kind": "cuda_max_allocated" if cuda else "cpu_peak_rss_increase",
    }
    if hasattr(backbone, "stage_times"):
        stages = backbone.stage_times(batch)
        total = sum(stages.values()) or 1.0
        row["stage_share"] = {k: v / total for k, v in stages.items()}
    return row


def profile(config: BackboneConfig, batch_sizes: list[int], warmup: int = 2, repeats: int = 5) -> list[dict]:
    """One child process per batch size; a failure (e.g. out of memory) becomes an `error` row."""
    return list(profile_rows(config, batch_sizes, warmup, repeats))


def profile_rows(config: BackboneConfig, batch_sizes: list[int], warmup: int = 2, repeats: int = 5
                 ) -> Iterator[dict]:
    """`profile`, one row at a time as each child finishes: a caller interrupted half-way (Ctrl-C) keeps the rows
    already measured."""
    for bs in batch_sizes:
        payload = json.dumps({"config": config.model_dump(mode="json"), "batch_size": bs, "warmup": warmup,
                              "repeats": repeats})
        proc = subprocess.run([sys.executable, "-m", "harness.run.profiler", payload], capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            if "HarnessError" in proc.stderr or "Error" in tail:
                yield {"backbone": config.name, "variant": config.variant, "batch_size": bs, "error": tail}
                continue
            raise HarnessError(f"profiling {config.name}:{config.variant} at batch {bs} failed: {tail}")
        yield json.loads(lines[-1])


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    result = measure(BackboneConfig(**args["config"]), args["batch_size"], args["warmup"], args["repeats"])
    print(json.dumps(result))


def profile_configs(backbones: list[str], variant: str | None, weights: str | None, device: str,
                    dtype: str) -> tuple[list[BackboneConfig], str | None]:
    """Every config `harness profile` measures, each input checked before the first measurement (unknown names,
    variants, a device this machine lacks, absent weights: one line each), on the resolved device; and the line
    that says how `auto` resolved (None when it did not apply)."""
    device, why = resolve_device(device)
    check_device_available(device)
    configs = []
    for name in resolve_backbones(backbones):
        cls = BACKBONES.get(name)
        if variant is not None and variant not in cls.variants:
            raise UnknownNameError(f"variant of backbone '{name}'", variant, cls.variants)
        configs.append(validate(BackboneConfig, {"name": name, "variant": variant or cls.default_variant,
                                                 "weights": weights, "device": device, "dtype": dtype}, "profile"))
    for cfg in configs:  # absent weights: one line naming them now, not a failed child per batch size
        BACKBONES.get(cfg.name).weights_fingerprint(cfg)
    return configs, why
