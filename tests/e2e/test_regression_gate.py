"""CI's regression gate, shown with a deliberate change: the committed mini baseline vs a fresh run.

The unchanged protocol reproduces the baseline's resnet 16-shot linear-probe cell and `harness compare`
passes; a deliberately crippled protocol (one L-BFGS iteration) drops it beyond the tolerance and
`harness compare` exits non-zero naming the row.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

BASELINE = Path(__file__).resolve().parents[2] / "leaderboards" / "mini.csv"
ROW = {"backbone": "resnet:tiny (random init)", "task": "fsc", "setting": "head=linear-probe,shots=16"}


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def one_row_baseline(tmp_path: Path) -> Path:
    base = pd.read_csv(BASELINE, dtype={"task_version": str})
    mask = (base["backbone"] == ROW["backbone"]) & (base["task"] == ROW["task"]) & (base["setting"] == ROW["setting"])
    assert mask.sum() == 1, "the committed baseline must hold the resnet 16-shot linear-probe row"
    path = tmp_path / "baseline.csv"
    base[mask].to_csv(path, index=False)
    return path


def run_fsc(tmp_path: Path, name: str, *extra: str) -> Path:
    out = tmp_path / name
    proc = harness("run", "-b", "resnet", "--suite", "mini", "--set", "head=linear-probe", "--set", "shots=16",
                   "--out-dir", str(out), *extra, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    board = pd.read_csv(out / "mini.csv", dtype={"task_version": str})
    board = board[(board["task"] == "fsc")]
    board.to_csv(out / "fsc.csv", index=False)
    return out / "fsc.csv"


def test_compare_passes_unchanged_and_fails_on_a_deliberate_regression(tmp_path):
    baseline = one_row_baseline(tmp_path)
    same = run_fsc(tmp_path, "same")
    ok = harness("compare", str(same), str(baseline), "--tolerance", "1.0", cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    worse = run_fsc(tmp_path, "worse", "--set", "max_iter=1", "--set", "c_search_steps=0")
    bad = harness("compare", str(worse), str(baseline), "--tolerance", "1.0", cwd=tmp_path)
    assert bad.returncode == 2
    assert "regressed" in bad.stdout and "shots=16" in bad.stdout and "Traceback" not in bad.stderr
