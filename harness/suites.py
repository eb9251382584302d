"""Suites are YAML data: the built-in ones ship in `harness/suites/`, and a path to a file works too."""

from __future__ import annotations

import os
from pathlib import Path

from harness.config import SuiteSpec, load_model
from harness.errors import ConfigError, UnknownNameError

BUILTIN_DIR = Path(__file__).parent / "suites"


def builtin_suites() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"))}


def load_suite(name_or_path: str) -> SuiteSpec:
    """A built-in suite by name, or a suite YAML file by path (anything ending in .yaml/.yml or holding a
    path separator is a path: a missing one says "file not found", not "unknown suite")."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or "/" in name_or_path or os.sep in name_or_path:
        if not path.is_file() and not path.is_dir():
            raise ConfigError(f"suite file not found: {path} (give an existing suite YAML, or a built-in suite: "
                              f"{', '.join(builtin_suites())})")
        return load_model(SuiteSpec, path)
    known = builtin_suites()
    if name_or_path not in known:
        raise UnknownNameError("suite", name_or_path, known)
    return load_model(SuiteSpec, known[name_or_path])
