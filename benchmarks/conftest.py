"""Benchmarks run in their own HARNESS_HOME / HARNESS_DATA / HARNESS_CACHE (temporary), never the user's.

Each benchmark times the harness's path and a plain reference path in the same run and stores both, and
their ratio, in `benchmark.extra_info` (saved by `--benchmark-save`, compared by `--benchmark-compare`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from _bench import LINES

_ROOT = Path(tempfile.mkdtemp(prefix="harness-bench-"))


def pytest_configure(config: pytest.Config) -> None:
    os.environ["HARNESS_HOME"] = str(_ROOT / "home")
    os.environ["HARNESS_DATA"] = str(_ROOT / "data")
    os.environ["HARNESS_CACHE"] = str(_ROOT / "cache")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_ROOT, ignore_errors=True)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if LINES:
        terminalreporter.section("benchmark ratios")
        for line in LINES:
            terminalreporter.write_line(line)
