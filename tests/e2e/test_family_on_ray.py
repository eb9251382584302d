"""A family member (`timm:<model>`) resolves in Ray workers as in the driver: `--executor ray` gives the records
the local executor gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

SUITE = """\
name: famray
device: cpu
batch_size: 32
entries:
  - task: fsc
    datasets: [mini_coop]
    grid: {head: [linear-probe], shots: [1, 4], seed: [1]}
"""


def run(work: Path, data: Path, *args: str) -> dict[str, dict]:
    work.mkdir()
    (work / "famray.yaml").write_text(SUITE)
    env = {**os.environ, "HARNESS_HOME": str(work / "home"), "HARNESS_CACHE": str(work / "cache"),
           "HARNESS_DATA": str(data), "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "-b", "timm:resnet10t", "--weights", "random",
                           "--suite", str(work / "famray.yaml"), "--out-dir", str(work / "lb"), *args],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {p.stem: json.loads(p.read_text()) for p in (work / "home" / "records").glob("*.json")}


def test_a_timm_member_runs_on_ray_with_the_local_numbers(tmp_path):
    data = tmp_path / "data"
    local, on_ray = run(tmp_path / "local", data), run(tmp_path / "ray", data, "--executor", "ray")
    assert len(local) == 2 and set(local) == set(on_ray)
    for key, record in local.items():
        assert record["backbone"]["name"] == "timm:resnet10t"
        assert on_ray[key]["metrics"] == record["metrics"], key
        assert on_ray[key]["backbone_fingerprint"] == record["backbone_fingerprint"]
