"""Suites are YAML data: the built-in ones ship in `harness/suites/`, and a path to a file works too."""

from __future__ import annotations

from pathlib import Path

from harness.config import SuiteSpec, load_model
from harness.errors import UnknownNameError

BUILTIN_DIR = Path(__file__).parent / "suites"


def builtin_suites() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"))}


def load_suite(name_or_path: str) -> SuiteSpec:
    """A built-in suite by name, or a suite YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} and path.exists():
        return load_model(SuiteSpec, path)
    known = builtin_suites()
    if name_or_path not in known:
        raise UnknownNameError("suite", name_or_path, known)
    return load_model(SuiteSpec, known[name_or_path])
