"""`harness run` with an OVSS entry on the mini sets, as a user runs it (subprocess, tmp homes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = """\
name: ovss_e2e
variant: tiny
device: cpu
batch_size: 32
entries:
  - task: ovss
    datasets: [mini_ovss]
    protocol: {train_dataset: mini_ovss_train, text_space: "clip:tiny", templates: ["a photo of a {}."],
               crop_size: 64, train_scale: [1.0, 1.0], flip: false, iterations: 20, batch_size: 8,
               lr: 0.001, head_channels: 16, head_groups: 4, short_side: 64}
    grid:
      seed: [1]
"""


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HARNESS_HOME": str(tmp_path / "home"), "HARNESS_DATA": str(tmp_path / "data"),
           "HARNESS_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=900,
                          cwd=tmp_path, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("backbone,label", [("resnet", "resnet:tiny (random init)"), ("dino", "dino:tiny")])
def test_ovss_mini_run_reports_miou(tmp_path, backbone, label):
    suite = tmp_path / "ovss.yaml"
    suite.write_text(SUITE)
    proc = run(tmp_path, "run", "--backbone", backbone, "--suite", str(suite))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "miou" in proc.stdout and "mini_ovss" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.startswith(f"| {label}")]
    assert rows, proc.stdout
    recs = [json.loads(p.read_text()) for p in (tmp_path / "home" / "records").glob("*.json")]
    assert len(recs) == 1 and recs[0]["task"] == "ovss" and recs[0]["primary_metric"] == "miou"
    assert 0 <= recs[0]["metrics"]["miou"] <= 100 and recs[0]["details"]["n_classes"] == 9
    assert len(list((tmp_path / "home" / "heads").glob("*.pt"))) == 1
