"""Suites are YAML data: the built-in ones ship in `harness/suites/`, and a path to a file works too."""

from __future__ import annotations

import os
import re
from pathlib import Path

from harness.config import SuiteSpec, load_model
from harness.errors import ConfigError, UnknownNameError

BUILTIN_DIR = Path(__file__).resolve().parents[1] / "suites"  # harness/suites/*.yaml (package data)


def builtin_suites() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"))}


# `--limit N` runs are their own suite, `<suite>@limitN`: their own MLflow experiment and leaderboard files, so
# they never enter a leaderboard with full runs.
_LIMITED = re.compile(r"^(?P<base>.+)@limit(?P<n>[1-9][0-9]*)$")


def limited_name(name: str, limit: int) -> str:
    """The suite name of a `--limit` run (`mini@limit8`); the name itself without a limit."""
    return f"{name}@limit{limit}" if limit else name


def split_limit(name: str) -> tuple[str, int]:
    """`mini@limit8` → ("mini", 8); any other name → (name, 0)."""
    match = _LIMITED.match(name)
    return (match["base"], int(match["n"])) if match else (name, 0)


def load_suite(name_or_path: str, limit: int = 0) -> SuiteSpec:
    """A built-in suite by name, or a suite YAML file by path (anything ending in .yaml/.yml or holding a
    path separator is a path: a missing one says "file not found", not "unknown suite"). With a limit (given,
    or as the name's `@limitN`), the suite is renamed `<suite>@limitN`."""
    base, named_limit = split_limit(name_or_path)
    if named_limit or limit:
        if named_limit and limit and named_limit != limit:
            raise ConfigError(f"suite '{name_or_path}' says limit {named_limit} but --limit is {limit}")
        spec = load_suite(base)
        return spec.model_copy(update={"name": limited_name(spec.name, limit or named_limit)})
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
