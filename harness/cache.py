"""The persistent feature cache: frozen features stored content-addressed, written atomically, verified on read.

An entry's address is the backbone's fingerprint (weights, preprocessing, feature config, dtype) plus
the feature kind plus the sha256 of the image file's bytes, so a changed image, transform or weight
never hits a stale entry, and the same image in two datasets is extracted once. Entries are
safetensors files carrying a checksum of their payload; a corrupt entry is detected, deleted and
recomputed, never used. Past the size budget (`HARNESS_CACHE_BUDGET_GB`, default 50) features are
streamed instead of stored.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.io import atomic_write_bytes, canonical_json, sha256_text
from harness.paths import cache_root

if TYPE_CHECKING:  # pragma: no cover
    import torch

Payload = "torch.Tensor | dict[str, torch.Tensor]"
_GLOBAL = "__global__"


def budget_bytes() -> int:
    return int(float(os.environ.get("HARNESS_CACHE_BUDGET_GB", "50")) * 2**30)


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    streamed: int = 0


class FeatureCache:
    """One namespace per (backbone fingerprint, kind)."""

    def __init__(self, backbone_fingerprint: dict, kind: str, root: Path | None = None):
        self.root = Path(root) if root else cache_root() / "features"
        self.namespace = sha256_text(canonical_json({"backbone": backbone_fingerprint, "kind": kind}))[:32]
        self.dir = self.root / self.namespace
        self.kind = kind
        self.stats = CacheStats()
        self._size: int | None = None
        meta = self.dir / "namespace.json"
        if not meta.exists():
            atomic_write_bytes(meta, (canonical_json({"backbone": backbone_fingerprint, "kind": kind}) + "\n").encode())

    def path(self, image_sha: str) -> Path:
        return self.dir / image_sha[:2] / f"{image_sha}.safetensors"

    def get(self, image_sha: str) -> Payload | None:
        from safetensors.torch import safe_open

        path = self.path(image_sha)
        if not path.is_file():
            self.stats.misses += 1
            return None
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
            if meta.get("sha256") != _digest(tensors):
                raise ValueError("checksum mismatch")
        except Exception:  # truncated, corrupt or foreign: recompute, never use
            path.unlink(missing_ok=True)
            self.stats.corrupt += 1
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        return tensors[_GLOBAL] if list(tensors) == [_GLOBAL] else tensors

    def put(self, image_sha: str, payload: Payload) -> bool:
        """Store an entry unless the budget is spent (then the caller just streams); True if stored."""
        from safetensors.torch import save

        tensors = {_GLOBAL: payload} if not isinstance(payload, dict) else payload
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        data = save(tensors, metadata={"sha256": _digest(tensors), "kind": self.kind})
        if self._size is None:
            self._size = directory_size(self.root)
        if self._size + len(data) > budget_bytes():
            self.stats.streamed += 1
            return False
        atomic_write_bytes(self.path(image_sha), data)
        self._size += len(data)
        return True


    def fetch(self, keys: Sequence[str], compute: Callable[[list[int]], Sequence[Payload]]) -> list[Payload]:
        """Every key's entry: hits read back, the misses computed together by `compute(miss_indices)` (one
        batch, in key order) and stored. For inputs that are tensors rather than files (see `tensor_key`)."""
        found = [self.get(k) for k in keys]
        missing = [i for i, value in enumerate(found) if value is None]
        if missing:
            for i, value in zip(missing, compute(missing), strict=True):
                self.put(keys[i], value)
                found[i] = value
        return found


def tensor_key(tensor: torch.Tensor) -> str:
    """The identity of one input tensor (a crop, a window, a preprocessed image): sha256 of dtype, shape, bytes."""
    import torch

    data = tensor.detach().cpu().contiguous()
    h = hashlib.sha256(f"{data.dtype}{tuple(data.shape)}".encode())
    h.update(data.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()


def directory_size(root: Path) -> int:
    if not root.exists():
        return 0
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def cache_info(root: Path | None = None) -> list[dict]:
    """One row per namespace: backbone, kind, entries, bytes."""
    import json

    root = Path(root) if root else cache_root() / "features"
    rows = []
    for ns in sorted(p for p in root.glob("*") if p.is_dir()) if root.exists() else []:
        try:
            meta = json.loads((ns / "namespace.json").read_text())
        except (OSError, ValueError):
            meta = {}
        files = list(ns.rglob("*.safetensors"))
        bb = meta.get("backbone", {})
        rows.append({"namespace": ns.name, "backbone": f"{bb.get('backbone', '?')}:{bb.get('variant', '?')}",
                     "kind": meta.get("kind", "?"), "entries": len(files),
                     "bytes": sum(f.stat().st_size for f in files)})
    return rows


def clear_cache(root: Path | None = None) -> int:
    root = Path(root) if root else cache_root() / "features"
    size = directory_size(root)
    shutil.rmtree(root, ignore_errors=True)
    return size
