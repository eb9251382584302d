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
    for rec in records:
        fp = rec["backbone_fingerprint"]
        assert (fp["backbone"], fp["variant"], fp["weights_kind"], fp["t"], fp["prompt"]) == (
            "vermouth", "tiny", "random", 200, "empty")
        assert 0.0 <= rec["metrics"][rec["primary_metric"]] <= 100.0
    probes = [r for r in records if r["task"] == "fsc" and r["protocol"].get("head", "linear-probe") == "linear-probe"]
    assert probes and all(r["details"]["feature_dim"] == 240 for r in probes)  # pooled L0..L3: 64+64+64+48
