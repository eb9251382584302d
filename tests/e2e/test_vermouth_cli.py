"""Vermouth through the CLI as a user runs it: the mini suite with the tiny random-init variant."""

from __future__ import annotations

import json
import re
import subprocess
import sys


def test_mini_suite_runs_vermouth_tiny(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--backbone", "vermouth", "--suite", "mini",
                           "--seeds", "1"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    assert "vermouth:tiny (random init)" in proc.stdout
    ran = re.search(r"(\d+) job\(s\) ran, 0 skipped", proc.stderr)
    records = [json.loads(p.read_text()) for p in (tmp_path / "home" / "records").glob("*.json")]
    assert ran and int(ran.group(1)) == len(records) >= 3  # at least FSC's shots {1, 4, 16}
    # Each task with the method's setting (its preset), in the record's options and in the frozen features.
    expected = {"fsc": (200, "ddpm", "empty", False), "sbir": (200, "none", "blip", True),
                "ovss": (50, "ddpm", "empty", True)}
    assert {rec["task"] for rec in records} == set(expected)
    for rec in records:
        fp, options = rec["backbone_fingerprint"], rec["backbone"]["options"]
        assert (fp["backbone"], fp["variant"], fp["weights_kind"]) == ("vermouth", "tiny", "random")
        setting = expected[rec["task"]]
        assert (fp["t"], fp["noise"], fp["prompt"], fp["cross_attention"]) == setting, rec["task"]
        assert (options["t"], options["noise"], options["prompt"], options["cross_attention"]) == setting
        assert options["resolution"] == 64  # the tiny variant keeps its own resolution
        assert 0.0 <= rec["metrics"][rec["primary_metric"]] <= 100.0
    probes = [r for r in records if r["task"] == "fsc" and r["protocol"].get("head", "linear-probe") == "linear-probe"]
    assert probes and all(r["details"]["feature_dim"] == 240 for r in probes)  # pooled L0..L3: 64+64+64+48
