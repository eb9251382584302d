"""Run records: one JSON file per finished job, written atomically before anything else.

The record is the source of truth; MLflow receives a copy. A record that exists means the job is done.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.metadata
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness import __version__
from harness.io import atomic_write_json
from harness.paths import harness_home

SCHEMA_VERSION = 1
PACKAGES = ("torch", "torchvision", "timm", "open_clip_torch", "diffusers", "transformers", "scikit-learn",
            "numpy", "pandas", "mlflow", "pillow")


@functools.cache
def git_commit() -> str:
    """The commit of the harness source tree, with `+dirty` when it has local changes."""
    src = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=src,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.cache
def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def environment(device: str) -> dict[str, Any]:
    return {
        "harness_version": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device,
        "packages": package_versions(),
    }


class RecordStore:
    """`<HARNESS_HOME>/records/<job key>.json`; the job key already names everything that defines the job."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else harness_home() / "records"

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def read(self, key: str) -> dict[str, Any]:
        return json.loads(self.path(key).read_text())

    def write(self, record: dict[str, Any]) -> Path:
        path = self.path(record["job_key"])
        atomic_write_json(path, record)
        return path


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
