"""Run records: one JSON file per finished job, written atomically before anything else.

The record is the source of truth; MLflow receives a copy. A record that exists means the job is done.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.metadata
import json
import platform
import shutil
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

    def keys(self, suite: str | None = None) -> list[str]:
        """Job keys with a record (of one suite when given), sorted; unreadable files are left out."""
        if not self.root.is_dir():
            return []
        keys = []
        for path in sorted(self.root.glob("*.json")):
            if suite is not None:
                try:
                    if json.loads(path.read_text()).get("suite") != suite:
                        continue
                except (OSError, ValueError):
                    continue
            keys.append(path.stem)
        return keys

    # -- jobs whose record is not yet in MLflow (tracker down): `<HARNESS_HOME>/pending/<key>/` ---------
    @property
    def pending_root(self) -> Path:
        return self.root.parent / "pending"

    def mark_pending(self, record: dict[str, Any], artifacts: dict[str, Path] | None = None) -> Path:
        """Remember that a record still has to reach MLflow, keeping its artifact files beside the marker."""
        folder = self.pending_root / record["job_key"]
        for name, src in (artifacts or {}).items():
            src = Path(src)
            dest = folder / "artifacts" / name / src.name
            if src.is_file() and src.resolve() != dest.resolve():  # already kept when marked before
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest)
        atomic_write_json(folder / "pending.json", {"job_key": record["job_key"], "suite": record["suite"],
                                                    "since": now_iso()})
        return folder

    def pending_keys(self, suite: str | None = None) -> list[str]:
        if not self.pending_root.is_dir():
            return []
        keys = []
        for marker in sorted(self.pending_root.glob("*/pending.json")):
            try:
                meta = json.loads(marker.read_text())
            except (OSError, ValueError):
                continue
            if suite is None or meta.get("suite") == suite:
                keys.append(marker.parent.name)
        return keys

    def pending_artifacts(self, key: str) -> dict[str, Path]:
        """`{artifact folder: file}` kept for a pending job (files with the same folder: the last wins)."""
        folder = self.pending_root / key / "artifacts"
        if not folder.is_dir():
            return {}
        return {f.parent.name: f for f in sorted(folder.glob("*/*")) if f.is_file()}

    def clear_pending(self, key: str) -> None:
        shutil.rmtree(self.pending_root / key, ignore_errors=True)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
