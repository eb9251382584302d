"""Where things live; every location honours its environment variable (DESIGN.md, Conventions)."""

from __future__ import annotations

import os
from pathlib import Path


def harness_home() -> Path:
    """Run records, the default MLflow store and persisted few-shot splits: `HARNESS_HOME` or `./.harness`."""
    return Path(os.environ.get("HARNESS_HOME") or Path.cwd() / ".harness").expanduser().resolve()


def leaderboards_dir() -> Path:
    """Where leaderboards and profiles are written by default: `HARNESS_HOME/leaderboards`, never the checkout
    (the committed `leaderboards/` holds CI's baseline, which a run must not overwrite)."""
    return harness_home() / "leaderboards"


def data_root() -> Path:
    """Prepared datasets: `HARNESS_DATA` or `~/.cache/harness/data`."""
    return Path(os.environ.get("HARNESS_DATA") or Path.home() / ".cache" / "harness" / "data").expanduser()


def cache_root() -> Path:
    """Feature and caption caches: `HARNESS_CACHE` or `~/.cache/harness/cache`."""
    return Path(os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "harness" / "cache").expanduser()
