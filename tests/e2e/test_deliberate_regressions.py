"""CI's gate catches real regressions: five deliberate breakages, each run through the real CLI on its slice of
the mini suite and compared against the committed baseline with `.ci/run`'s command, must each fail it;
the same slices unbroken must pass it (no false alarm).

Each breakage is a monkeypatch applied inside the `harness` process (tests/e2e/breakages.py). A slice is
one entry of `harness/suites/mini.yaml`, unchanged but for its grid, run for one backbone; the baseline is
cut to the rows the slice produces, so a failure is a regressed row, never a missing one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "leaderboards" / "mini.csv"
MINI = ROOT / "harness" / "suites" / "mini.yaml"
HERE = Path(__file__).resolve().parent

# breakage -> (backbone, task, grid of the slice)
SLICES = {
    "probe_max_iter_1": ("resnet", "fsc", {"head": ["linear-probe"], "shots": [16], "seed": [1, 2, 3]}),
    "dense_level_dropped": ("resnet", "ovss", {"seed": [1, 2, 3]}),
    "features_not_l2_normalised": ("clip", "fsc", {"head": ["linear-probe"], "shots": [16], "seed": [1, 2, 3]}),
    "ovss_wrong_ignore_index": ("resnet", "ovss", {"seed": [1, 2, 3]}),
    "sbir_query_gallery_swapped": ("resnet", "sbir", {"seed": [1]}),
}


def slice_suite(path: Path, name: str, entries: list[tuple[str, dict]]) -> Path:
    """The mini suite with only these (task, grid) entries, every other setting as committed."""
    spec = yaml.safe_load(MINI.read_text())
    by_task = {e["task"]: e for e in spec["entries"]}
    spec["name"] = name
    spec["entries"] = [{**by_task[task], "grid": grid} for task, grid in entries]
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_harness(args: list[str], tmp: Path, breakage: str | None = None) -> subprocess.CompletedProcess:
    env_code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import breakages; breakages.main()"
    cmd = [sys.executable, "-c", env_code, breakage, *args] if breakage else [sys.executable, "-m", "harness", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, timeout=900)


def gate(tmp: Path, name: str, backbone: str, entries: list[tuple[str, dict]], breakage: str | None = None
         ) -> subprocess.CompletedProcess:
    """Run the slice (broken or not), cut the baseline to its rows, and run `.ci/run`'s compare."""
    suite = slice_suite(tmp / f"{name}.yaml", name, entries)
    out = tmp / f"{name}-lb"
    proc = run_harness(["run", "-b", backbone, "--suite", str(suite), "--out-dir", str(out)], tmp, breakage)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    current = pd.read_csv(out / f"{name}.csv", dtype={"task_version": str, "setting": str})
    base = pd.read_csv(BASELINE, dtype={"task_version": str, "setting": str}).fillna({"setting": ""})
    keys = set(zip(current["backbone"], current["task"], current["setting"].fillna(""), strict=True))
    cut = base[[k in keys for k in zip(base["backbone"], base["task"], base["setting"], strict=True)]]
    assert len(cut) == len(current), "the slice's rows must all be in the committed baseline"
    cut.to_csv(tmp / f"{name}-baseline.csv", index=False)
    return subprocess.run([sys.executable, "-m", "harness", "compare", str(out / f"{name}.csv"),
                           str(tmp / f"{name}-baseline.csv"), "--tolerance", "1.0"],
                          capture_output=True, text=True, cwd=tmp, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", sorted({b for b, _, _ in SLICES.values()}))
def test_the_unbroken_slices_pass_the_gate(tmp_path, backbone):
    entries = list({(task, repr(grid)): (task, grid) for b, task, grid in SLICES.values() if b == backbone}.values())
    ok = gate(tmp_path, f"unbroken-{backbone}", backbone, entries)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "regressed" not in ok.stdout


@pytest.mark.slow
@pytest.mark.parametrize("breakage", sorted(SLICES))
def test_a_deliberate_breakage_fails_the_gate(tmp_path, breakage):
    backbone, task, grid = SLICES[breakage]
    bad = gate(tmp_path, breakage.replace("_", "-"), backbone, [(task, grid)], breakage)
    print(bad.stdout)  # the flagged row and why it counts, for the CI log
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "regressed" in bad.stdout and "Traceback" not in bad.stderr
