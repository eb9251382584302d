"""The CLIP and DINO baselines through the CLI as a user runs them: a mini-suite job each, leaderboard rows,
and the one-line error for weights that are not there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def harness(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"harness {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_mini_suite_one_job_each_and_leaderboard_rows(tmp_path: Path):
    """`harness run --backbone clip|dino --suite mini --seeds 1 --set shots=4`, both in one invocation (one
    interpreter start-up instead of two keeps this file fast); each backbone builds, extracts and is probed."""
    proc = harness("run", "--backbone", "clip,dino", "--suite", "mini", "--seeds", "1", "--set", "shots=4")
    assert "8 job(s) ran, 0 skipped" in proc.stderr  # per backbone: fsc x 2 heads, sbir, ovss
    rows = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    for backbone in ("clip", "dino"):
        assert any(f"{backbone}:tiny (random init)" in row for row in rows), proc.stdout
    recs = [json.loads(p.read_text()) for p in (tmp_path / "home" / "records").glob("*.json")]
    assert sorted((r["backbone"]["name"], r["task"]) for r in recs) == sorted(
        (b, t) for b in ("clip", "dino") for t in ("fsc", "fsc", "sbir", "ovss"))
    for rec in recs:
        assert rec["weights_fingerprint"] == "random(seed=0,init=v2)"
        metric = rec["metrics"][rec["primary_metric"]]
        assert 0.0 <= metric <= 100.0


def test_missing_weights_is_one_line_naming_id_and_fetch_command(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))  # HF_HUB_OFFLINE=1 comes from conftest
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--backbone", "dino", "--variant", "dinov2-s",
                           "--suite", "mini", "--seeds", "1", "--set", "shots=4"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "'timm/vit_small_patch14_dinov2.lvd142m'" in lines[0]
    assert "`hf download timm/vit_small_patch14_dinov2.lvd142m`" in lines[0]
    assert not (tmp_path / "home" / "records").exists()
