"""Real-size check: one image through SD-1.5-shaped Vermouth (random weights, published configs), per stage.

The `sd15` variant with `weights=random` builds the UNet, VAE and text encoder from SD 1.5's published
config values (`configs.SD15`), so the cost of the real model is measured without a download: time and
peak memory of the VAE encode, the text encoder, the UNet pass (to the last needed level), and optionally
a BLIP-base caption and the ResNet-18 expert. CPU memory is the process's resident set sampled every 2 ms
during a stage: its peak, and its rise over the stage's start after freed heap memory was handed back to
the OS (malloc_trim), which approximates the stage's own working set. On CUDA: the allocator's peak.
The first run is cold (one-off allocations, lazy init); later runs are steady state.

    python -m backbones.vermouth.realsize_check [--device cuda] [--dtype fp16] [--blip] [--expert resnet18]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import threading
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mib() -> float:
    """The resident set of this process now (Linux /proc), MiB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE / 2**20


def _trim() -> None:
    """Give freed heap pages back to the OS, so a stage's RSS rise is its own (glibc only; else a no-op)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextmanager
def measure(device: torch.device, into: dict[str, Any], name: str) -> Iterator[None]:
    """Wall time and peak memory of the block: CPU resident set (sampled) or CUDA allocator peak."""
    _trim()
    peak = start = rss_mib()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.002):
            peak = max(peak, rss_mib())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_start = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        done.set()
        thread.join()
        peak = max(peak, rss_mib())
        row: dict[str, Any] = {"stage": name, "seconds": round(elapsed, 3), "rss_peak_mib": round(peak, 1),
                               "rss_rise_mib": round(peak - start, 1)}
        if device.type == "cuda":
            row["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            row["cuda_rise_mib"] = round((torch.cuda.max_memory_allocated() - cuda_start) / 2**20, 1)
        into[name] = row


def params_m(modules: dict[str, torch.nn.Module]) -> dict[str, float]:
    return {k: round(sum(p.numel() for p in m.parameters()) / 1e6, 1) for k, m in modules.items()}


def run(device: str = "cpu", dtype: str = "fp32", resolution: int = 512, blip: bool = False,
        expert: str = "none", repeats: int = 2, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build SD-1.5-shaped Vermouth with random weights and time each stage on one image, `repeats` times."""
    from PIL import Image

    from backbones.common import compute_context
    from backbones.vermouth.backbone import VermouthBackbone
    from backbones.vermouth.diffusion import image_id

    dev = torch.device(device)
    config = types.SimpleNamespace(name="vermouth", variant="sd15", weights="random", device=device, dtype=dtype,
                                   batch_size=1, seed=0)
    build: dict[str, Any] = {}
    with measure(dev, build, "build (random init)"):
        # Everything random: the captioner and the expert trunk too (their real weights are downloads).
        experts = {k: {**v, "weights": "random"} for k, v in VermouthBackbone.variants["sd15"].extra["experts"].items()}
        bb = VermouthBackbone(config, resolution=resolution, expert=expert, experts=experts,
                              prompt="blip" if blip else "empty", captioner="random")
        if bb.captioner is not None:
            bb.captioner.load()
    modules = dict(bb.parts.modules())
    if bb.expert is not None:
        modules["expert"] = bb.expert.model
    if bb.captioner is not None and bb.captioner._model is not None:
        modules["blip"] = bb.captioner._model
    log(f"parameters (M): {params_m(modules)}; build {build['build (random init)']['seconds']:.1f}s")
    x = bb.preprocess([Image.new("RGB", (resolution, resolution), (120, 90, 60))])
    ids = [image_id(x[0])]
    runs: list[dict[str, Any]] = []
    for rep in range(repeats):
        stages: dict[str, Any] = {}
        with compute_context(dev, dtype):
            xd = x.to(dev)
            prompts = [""]
            if bb.captioner is not None:
                bb.captioner.cache.folder = bb.captioner.cache.folder.with_name(f"realsize-{time.time_ns()}")
                with measure(dev, stages, "BLIP-base caption (greedy)"):
                    prompts = bb.prompts.prompts(xd, ids)
            bb.text._memo.clear()
            with measure(dev, stages, "text encoder (CLIP-L)"):
                context = bb.text.encode(prompts)
            with measure(dev, stages, "VAE encode"):
                z0 = bb.diffusion.latents(xd)
            with measure(dev, stages, "UNet (to the last level)"):
                levels = bb.diffusion.levels_from_latents(z0, context, ids)
            if bb.expert is not None:
                with measure(dev, stages, f"expert {expert}"):
                    bb.expert(xd, {k: tuple(v.shape[-2:]) for k, v in levels.items()})
        log(f"run {rep + 1}: " + ", ".join(f"{k} {v['seconds']:.2f}s" for k, v in stages.items()))
        runs.append(stages)
    return {"device": device, "dtype": dtype, "resolution": resolution, "threads": torch.get_num_threads(),
            "params_m": params_m(modules), "levels": {k: list(v.shape) for k, v in levels.items()},
            "build": build, "cold": list(runs[0].values()), "warm": list(runs[-1].values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--blip", action="store_true", help="also caption with a BLIP-base-shaped captioner")
    ap.add_argument("--expert", default="none", choices=["none", "resnet18", "dinov2"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    out = run(args.device, args.dtype, args.resolution, args.blip, args.expert, max(1, args.repeats))
    cuda = out["device"].startswith("cuda")
    print(f"\ndevice {out['device']} ({out['threads']} threads), {out['dtype']}, {out['resolution']} px; "
          f"levels {out['levels']}")
    mem = "CUDA" if cuda else "RSS"
    print(f"{'stage':28s} {'cold s':>8s} {'warm s':>8s} {mem + ' rise MiB':>14s} {mem + ' peak MiB':>14s}")
    for cold, warm in zip(out["cold"], out["warm"], strict=True):
        rise, peak = ((cold["cuda_rise_mib"], cold["cuda_peak_mib"]) if cuda
                      else (cold["rss_rise_mib"], cold["rss_peak_mib"]))
        print(f"{cold['stage']:28s} {cold['seconds']:8.2f} {warm['seconds']:8.2f} {rise:14.0f} {peak:14.0f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
