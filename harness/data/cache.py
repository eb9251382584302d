"""The persistent feature store: frozen features stored content-addressed, compact, within a budget.

An entry's address is the backbone's fingerprint (weights, preprocessing, feature config, dtype) plus the
feature kind plus the store dtype plus the sha256 of the image file's bytes, so a changed image, transform
or weight never hits a stale entry, and the same image in two datasets is extracted once.

- Entries are safetensors files (read back memory-mapped) carrying a checksum of their payload; a corrupt
  entry is detected, deleted and recomputed, never used.
- Values are stored in the store dtype (`feature_dtype`: fp16 by default, bf16 or fp32): half the bytes of
  fp32. Heads always see features rounded to that dtype (`round_to_store`), stored or not, so a cache hit
  and a fresh computation give the same numbers.
- The budget (`HARNESS_CACHE_BUDGET_GB`, default 50) is kept by evicting the least recently used entries.
  A ledger (`ledger.sqlite`: entry, namespace, bytes, last use; WAL, so concurrent runs share it) knows the
  total without walking the tree. Whether a whole set of features should be stored at all is the caller's
  decision (`worth_storing`): a set larger than half the budget would only churn the store.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sqlite3
import stat
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import ConfigError, HarnessError, warn
from harness.io import atomic_write_bytes, canonical_json, sha256_text
from harness.paths import cache_root

if TYPE_CHECKING:  # pragma: no cover
    import torch

Payload = "torch.Tensor | dict[str, torch.Tensor]"
_GLOBAL = "__global__"
STORE_DTYPES = ("fp16", "bf16", "fp32")
LEDGER = "ledger.sqlite"
EVICT_TO = 0.9  # evicting frees down to this share of the budget, so eviction runs rarely, not per entry


def budget_gb() -> float:
    """`HARNESS_CACHE_BUDGET_GB` (default 50): a finite number >= 0, else one line naming the variable."""
    raw = os.environ.get("HARNESS_CACHE_BUDGET_GB", "").strip() or "50"
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"HARNESS_CACHE_BUDGET_GB must be a number of GiB >= 0 (e.g. 50), got '{raw}'; "
                          "fix or unset it")
    return value


def budget_bytes() -> int:
    return int(budget_gb() * 2**30)


def store_torch_dtype(name: str) -> torch.dtype:
    import torch

    if name not in STORE_DTYPES:
        raise HarnessError(f"feature_dtype must be one of {', '.join(STORE_DTYPES)}, got '{name}'")
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


def round_to_store(payload: Payload, dtype_name: str | None) -> Payload:
    """Features as the store keeps them: on the CPU, contiguous, in the store dtype (None: their own dtype).

    fp16 holds ±65504: a finite value beyond it would become inf and silently poison a head, so it is an error
    that names the way out (bf16 has float32's range)."""
    import torch

    dtype = store_torch_dtype(dtype_name) if dtype_name is not None else None

    def one(t: torch.Tensor) -> torch.Tensor:
        out = t.detach().to("cpu", dtype or t.dtype).contiguous()
        # One scan in the common case: only a non-finite fp16 result needs the input looked at.
        if dtype == torch.float16 and not torch.isfinite(out).all() and torch.isfinite(t).all():
            raise HarnessError(f"features exceed the fp16 range (max |value| {float(t.abs().max()):.4g} > 65504); "
                               "store them as bf16 or fp32: --feature-dtype bf16")
        return out

    if isinstance(payload, dict):
        return {k: one(v) for k, v in payload.items()}
    return one(payload)


def payload_bytes(payload: Payload) -> int:
    tensors = payload.values() if isinstance(payload, dict) else [payload]
    return sum(t.numel() * t.element_size() for t in tensors)


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
    streamed: int = 0  # computed but not stored (the set is not worth storing, or the store cannot be written)
    evicted: int = 0


# The entries, and their total kept by triggers in the same transaction as every insert or delete (the budget
# check of each put reads one row instead of summing the table). Existing ledgers gain the total on open.
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS entries (path TEXT PRIMARY KEY, namespace TEXT, bytes INTEGER, used REAL)",
    "CREATE INDEX IF NOT EXISTS by_use ON entries (used)",
    "CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO totals SELECT 0, COALESCE(SUM(bytes), 0) FROM entries",
    "CREATE TRIGGER IF NOT EXISTS entries_added AFTER INSERT ON entries "
    "BEGIN UPDATE totals SET bytes = bytes + NEW.bytes WHERE id = 0; END",
    "CREATE TRIGGER IF NOT EXISTS entries_removed AFTER DELETE ON entries "
    "BEGIN UPDATE totals SET bytes = bytes - OLD.bytes WHERE id = 0; END",
)


class Ledger:
    """Sizes and last uses of every entry under one cache root, in sqlite; the budget's bookkeeping.

    Built by one walk of the tree the first time a root is used (entries written before the ledger existed
    count too); afterwards it is updated entry by entry. When it cannot be opened the store still works, it
    just cannot store (nothing is lost: features are then computed as they are needed).
    """

    def __init__(self, root: Path):
        self.root = root
        self.conn: sqlite3.Connection | None = None
        try:
            root.mkdir(parents=True, exist_ok=True)
            fresh = not (root / LEDGER).exists()
            self.conn = sqlite3.connect(root / LEDGER, timeout=60, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA recursive_triggers=ON")  # a REPLACE's implicit delete keeps the total
            self.conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:  # one transaction: no writer sees entries without their total
                self.conn.execute(statement)
            if fresh:
                self._import_tree()
            self.conn.execute("COMMIT")
        except (OSError, sqlite3.Error):
            self.conn = None

    def _import_tree(self) -> None:
        assert self.conn is not None
        rows = [(str(p.relative_to(self.root)), p.relative_to(self.root).parts[0], p.stat().st_size, p.stat().st_mtime)
                for p in self.root.rglob("*.safetensors") if p.is_file()]
        self.conn.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?)", rows)

    def total(self) -> int:
        """Bytes of all entries: one row kept by triggers, so a put costs the same at 100 or 100,000 entries."""
        if self.conn is None:
            return 0
        return int(self.conn.execute("SELECT bytes FROM totals WHERE id = 0").fetchone()[0])

    def touch(self, rel: str) -> None:
        if self.conn is not None:
            try:
                self.conn.execute("UPDATE entries SET used = ? WHERE path = ?", (time.time(), rel))
            except sqlite3.Error:
                pass

    def forget(self, rel: str) -> None:
        if self.conn is not None:
            try:
                self.conn.execute("DELETE FROM entries WHERE path = ?", (rel,))
            except sqlite3.Error:
                pass

    def admit(self, rel: str, namespace: str, size: int, budget: int) -> list[str] | None:
        """Record a new entry of `size` bytes; return the entries to delete to keep the budget (least recently
        used first), or None when it cannot be admitted (larger than the budget, or no ledger)."""
        if self.conn is None or size > budget:
            return None
        try:
            self.conn.execute("BEGIN IMMEDIATE")  # one writer decides at a time: two runs never both overfill
            self.conn.execute("DELETE FROM entries WHERE path = ?", (rel,))  # a rewrite replaces its old size
            total = self.total()
            victims: list[str] = []
            if total + size > budget:
                target = total + size - int(budget * EVICT_TO)
                freed = 0
                for path, nbytes in self.conn.execute(
                        "SELECT path, bytes FROM entries ORDER BY used"):
                    if freed >= target:
                        break
                    victims.append(path)
                    freed += nbytes
                self.conn.executemany("DELETE FROM entries WHERE path = ?", [(v,) for v in victims])
            self.conn.execute("INSERT INTO entries VALUES (?, ?, ?, ?)", (rel, namespace, size, time.time()))
            self.conn.execute("COMMIT")
            return victims
        except sqlite3.Error:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            return None

    def namespace_rows(self) -> dict[str, tuple[int, int]]:
        """namespace → (entries, bytes)."""
        if self.conn is None:
            return {}
        rows = self.conn.execute("SELECT namespace, COUNT(*), SUM(bytes) FROM entries GROUP BY namespace")
        return {ns: (int(n), int(b)) for ns, n, b in rows}

    def drop_namespace(self, namespace: str) -> None:
        if self.conn is not None:
            self.conn.execute("DELETE FROM entries WHERE namespace = ?", (namespace,))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


_LEDGERS: dict[str, Ledger] = {}


def ledger_for(root: Path) -> Ledger:
    """One ledger connection per root and process (pid-keyed: a forked child opens its own)."""
    key = f"{os.getpid()}:{root.resolve()}"
    if key not in _LEDGERS or _LEDGERS[key].conn is None and (root / LEDGER).exists():
        _LEDGERS[key] = Ledger(root)
    return _LEDGERS[key]


def forget_ledgers() -> None:
    """Close this process's ledger connections (tests switch HARNESS_CACHE between cases)."""
    for ledger in _LEDGERS.values():
        ledger.close()
    _LEDGERS.clear()


_WARNED: set[str] = set()
# Entries this process has checked against their checksum, by (path, size, mtime): checked once per process,
# not once per job (a file rewritten since is checked again).
_VERIFIED: set[tuple[str, int, int]] = set()
# The entries this process read last, up to RECENT_BYTES (a constant: memory stays bounded by it, never by a
# split). Consecutive jobs of one backbone read the same val/test entries; a hit skips the file and its decode.
RECENT_BYTES = 256 * 2**20
RECENT_MAX_ENTRY = 2**20  # global features and small maps; an sd15 entry (11-23 MB) is never kept
_RECENT: OrderedDict[tuple[str, int, int], Payload] = OrderedDict()
_RECENT_SIZE = [0]


def _remember(seen: tuple[str, int, int], payload: Payload) -> None:
    size = payload_bytes(payload)
    if size > RECENT_MAX_ENTRY:  # big dense maps stream: keeping a few would only push out many small ones
        return
    _RECENT[seen] = payload
    _RECENT_SIZE[0] += size
    while _RECENT_SIZE[0] > RECENT_BYTES:
        _, old = _RECENT.popitem(last=False)
        _RECENT_SIZE[0] -= payload_bytes(old)


def _warn_once(message: str) -> None:
    """A store problem is said once per process, not once per entry."""
    if message not in _WARNED:
        _WARNED.add(message)
        warn(message)


def write_cache_file(path: Path, data: bytes) -> bool:
    """Write one file under HARNESS_CACHE (a text embedding, a trained head); on a full or read-only disk,
    say so once and go on without it (it is recomputed next time): a cache never fails a run."""
    try:
        atomic_write_bytes(path, data)
        return True
    except OSError as exc:
        _warn_once(f"the cache {cache_root()} cannot be written ({exc.strerror or exc}); results are recomputed "
                   "next time instead of reused (free space or set HARNESS_CACHE)")
        return False


class FeatureCache:
    """One namespace per (backbone fingerprint, kind, store dtype).

    `dtype` None keeps each tensor's own dtype (a backbone's internal caches, e.g. Vermouth's fp64 latents)."""

    def __init__(self, backbone_fingerprint: dict, kind: str, root: Path | None = None, dtype: str | None = None):
        if dtype is not None:
            store_torch_dtype(dtype)  # validate the name
        self.root = Path(root) if root else cache_root() / "features"
        ident = {"backbone": backbone_fingerprint, "kind": kind}
        if dtype not in (None, "fp32"):  # fp32 namespaces keep the address they had before store dtypes existed
            ident["store_dtype"] = dtype
        self.namespace = sha256_text(canonical_json(ident))[:32]
        self.dir = self.root / self.namespace
        self.kind = kind
        self.dtype = dtype
        self.stats = CacheStats()
        self.ledger = ledger_for(self.root)
        self.writable = True
        meta = self.dir / "namespace.json"
        if not meta.is_file():
            try:
                atomic_write_bytes(meta, (canonical_json(ident) + "\n").encode())
            except OSError as exc:  # a full or read-only cache disk: features are computed, not stored
                self.writable = False
                _warn_once(f"the feature store {self.root} cannot be written ({exc.strerror or exc}); features are "
                           "computed as needed and not stored (free space or set HARNESS_CACHE)")

    def path(self, image_sha: str) -> Path:
        return self.dir / image_sha[:2] / f"{image_sha}.safetensors"

    def _rel(self, image_sha: str) -> str:
        return str(self.path(image_sha).relative_to(self.root))

    def contains(self, image_sha: str) -> bool:
        """An entry exists (not verified: `get` verifies)."""
        return self.path(image_sha).is_file()

    def get(self, image_sha: str) -> Payload | None:
        """The verified entry, memory-mapped from disk, or None (missing or corrupt: to compute)."""
        from safetensors.torch import safe_open

        path = self.path(image_sha)
        try:
            st = path.stat()
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            self.stats.misses += 1
            return None
        seen = (str(path), st.st_size, st.st_mtime_ns)
        recent = _RECENT.get(seen)
        if recent is not None:  # read (and verified) moments ago by this process, unchanged on disk since
            _RECENT.move_to_end(seen)
            self.stats.hits += 1
            return recent
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
            if seen not in _VERIFIED:
                if meta.get("sha256") != _digest(tensors):
                    raise ValueError("checksum mismatch")
                _VERIFIED.add(seen)
                self.ledger.touch(self._rel(image_sha))  # once per process is enough for LRU
        except Exception:  # truncated, corrupt or foreign: recompute, never use
            path.unlink(missing_ok=True)
            self.ledger.forget(self._rel(image_sha))
            self.stats.corrupt += 1
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        payload = tensors[_GLOBAL] if list(tensors) == [_GLOBAL] else tensors
        _remember(seen, payload)
        return payload

    def put(self, image_sha: str, payload: Payload) -> bool:
        """Store an entry (in the store dtype), evicting least recently used entries past the budget; True if
        stored. An entry larger than the whole budget, or a store that cannot be written, is not stored."""
        from safetensors.torch import save

        payload = round_to_store(payload, self.dtype)
        if not self.writable:
            self.stats.streamed += 1
            return False
        tensors = {_GLOBAL: payload} if not isinstance(payload, dict) else payload
        data = save(tensors, metadata={"sha256": _digest(tensors), "kind": self.kind, "dtype": str(self.dtype)})
        rel = self._rel(image_sha)
        victims = self.ledger.admit(rel, self.namespace, len(data), budget_bytes())
        if victims is None:
            self.stats.streamed += 1
            return False
        for victim in victims:
            (self.root / victim).unlink(missing_ok=True)
        self.stats.evicted += len(victims)
        target = self.path(image_sha)
        if target.is_dir() and not target.is_symlink():  # a folder where an entry belongs: replaced by the entry
            shutil.rmtree(target, ignore_errors=True)
        try:
            atomic_write_bytes(self.path(image_sha), data, durable=False)  # checksummed: a torn file is recomputed
        except OSError as exc:
            self.ledger.forget(rel)
            self.stats.streamed += 1
            _warn_once(f"the feature store {self.root} cannot be written ({exc.strerror or exc}); features are "
                       "computed as needed and not stored (free space or set HARNESS_CACHE)")
            return False
        return True

    def fetch(self, keys: Sequence[str], compute: Callable[[list[int]], Sequence[Payload]],
              store: bool = True) -> list[Payload]:
        """Every key's entry, in the store dtype: hits read back, the misses computed together by
        `compute(miss_indices)` (one batch, in key order) and stored when `store`. For inputs that are tensors
        rather than files (see `tensor_key`)."""
        found = [self.get(k) for k in keys]
        missing = [i for i, value in enumerate(found) if value is None]
        if missing:
            for i, value in zip(missing, compute(missing), strict=True):
                value = round_to_store(value, self.dtype)
                if store:
                    self.put(keys[i], value)
                else:
                    self.stats.streamed += 1
                found[i] = value
        return found


def worth_storing(total_bytes: int) -> bool:
    """Whether a set of features should go to the store: only when it fits in half the budget, so one large
    set (a 50,000-image test split at 11 MB per image) does not evict everything else for a single use."""
    return total_bytes <= budget_bytes() // 2


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


def _namespace_meta(ns: Path) -> dict:
    try:
        return json.loads((ns / "namespace.json").read_text())
    except (OSError, ValueError):
        return {}


def cache_info(root: Path | None = None) -> list[dict]:
    """One row per namespace: backbone, kind, store dtype, entries, bytes (from the ledger: no tree walk)."""
    root = Path(root) if root else cache_root() / "features"
    if not root.exists():
        return []
    counts = ledger_for(root).namespace_rows()
    rows = []
    for ns in sorted(p for p in root.glob("*") if p.is_dir()):
        meta = _namespace_meta(ns)
        bb = meta.get("backbone", {})
        entries, size = counts.get(ns.name, (0, 0))
        rows.append({"namespace": ns.name, "backbone": f"{bb.get('backbone', '?')}:{bb.get('variant', '?')}",
                     "kind": meta.get("kind", "?"), "dtype": meta.get("store_dtype", "fp32"),
                     "entries": entries, "bytes": size})
    return rows


def cache_selection(backbone: str | None = None, root: Path | None = None) -> list[dict]:
    """The `cache_info` rows `clear_cache(backbone=...)` would delete: every namespace, or those whose namespace
    record names `backbone` (a name, or name:variant). What `harness cache clear` shows before it asks."""
    rows = cache_info(root)
    if backbone is None:
        return rows
    return [row for row in rows if backbone in (row["backbone"].split(":", 1)[0], row["backbone"])]


def clear_cache(root: Path | None = None, backbone: str | None = None) -> int:
    """Delete the store (or only the namespaces of `backbone`, a name or name:variant); returns bytes freed."""
    root = Path(root) if root else cache_root() / "features"
    if not root.exists():
        return 0
    if backbone is None:
        size = directory_size(root)
        forget_ledgers()
        shutil.rmtree(root, ignore_errors=True)
        return size
    ledger = ledger_for(root)
    freed = 0
    for row in cache_selection(backbone, root):
        freed += directory_size(root / row["namespace"])
        shutil.rmtree(root / row["namespace"], ignore_errors=True)
        ledger.drop_namespace(row["namespace"])
    return freed
