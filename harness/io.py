"""Small file helpers shared by records, splits and caches: atomic writes and stable hashes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers never see half a file.

    `durable=False` skips the fsync, for files whose loss in a power cut costs only a recomputation (feature
    store entries carry a checksum that catches a torn file): at 130k small entries the fsyncs would dominate.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the same object always gives the same string."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def publish_tree(root: Path, write: Callable[[Path], None], same: Callable[[Path, Path], bool]) -> None:
    """Write a whole folder via a temp sibling and a rename, so a reader never sees half of it.

    An identical tree already at `root` (`same(root, new)`: a concurrent or earlier writer) is kept
    untouched, so its readers are never disturbed; any other tree at `root` is replaced.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.tmp-"))
    try:
        write(tmp)
        if root.exists():
            if same(root, tmp):
                return
            trash = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.old-"))
            os.replace(root, trash / "old")
            shutil.rmtree(trash)
        try:
            os.replace(tmp, root)
        except OSError:
            if not root.is_dir():  # a concurrent writer won the race with identical content: keep its copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
