"""SBIR through the CLI as a user runs it: a suite with an `sbir` entry on `mini_sbir`, the leaderboard row,
the grid artifact in MLflow, and `harness data verify` on a real-layout tree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = """\
name: sbir-mini
description: the SBIR task on its mini dataset
variant: tiny
device: cpu
batch_size: 32
entries:
  - task: sbir
    datasets: [mini_sbir]
    protocol: {text_space: "clip:tiny", epochs: 3}
    grid:
      seed: [1]
"""


def harness(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HARNESS_HOME": str(tmp_path / "home"), "HARNESS_DATA": str(tmp_path / "data"),
           "HARNESS_CACHE": str(tmp_path / "cache")}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=900,
                          cwd=tmp_path, env=env)


@pytest.mark.parametrize("backbone, label", [("resnet", "resnet:tiny (random init)"),
                                             ("clip", "clip:tiny (random init)")])
def test_sbir_mini_suite_runs_and_reports(tmp_path, backbone, label):
    suite = tmp_path / "sbir-mini.yaml"
    suite.write_text(SUITE)
    proc = harness(tmp_path, "run", "--backbone", backbone, "--suite", str(suite))
    assert proc.returncode == 0, proc.stderr
    assert "1 job(s) ran" in proc.stderr
    assert label in proc.stdout
    assert "map_all" in proc.stdout

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["harness-sbir-mini"])
    job = runs[runs["tags.harness.kind"] == "job"].iloc[0]
    for metric in ("map_all", "map_200", "p_100", "p_200", "map_all_class_avg"):
        assert 0 <= job[f"metrics.{metric}"] <= 100
    names = [a.path for a in mlflow.MlflowClient().list_artifacts(job["run_id"], "qualitative")]
    assert names == ["qualitative/sbir_top10.png"]


def test_data_verify_on_a_real_layout(tmp_path):
    from tasks.sbir.datasets import Sketchy25

    root = tmp_path / "data" / "Sketchy"
    split = root / "zeroshot1"
    split.mkdir(parents=True)
    (split / "cname_cid.txt").write_text("ant 0\n")
    (split / "cname_cid_zero.txt").write_text("".join(f"{c} {i}\n" for i, c in enumerate(Sketchy25.unseen_classes)))
    for part, classes in (("train", ["ant"]), ("zero", Sketchy25.unseen_classes)):
        for lst, folder, ext in (("sketch_tx_000000000000_ready_filelist", "sketch", "png"),
                                 ("all_photo_filelist", "photo", "jpg")):
            rels = [f"256x256/{folder}/tx_000000000000_ready/{c}/n0000_1.{ext}" for c in classes]
            for rel in rels:
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(b"")
            (split / f"{lst}_{part}.txt").write_text("".join(f"{r} {i}\n" for i, r in enumerate(rels)))
    assert harness(tmp_path, "data", "verify", "sketchy_25").returncode == 0
    (root / "256x256/photo/tx_000000000000_ready/cup/n0000_1.jpg").unlink()
    proc = harness(tmp_path, "data", "verify", "sketchy_25")
    assert proc.returncode != 0 and "cup/n0000_1.jpg" in proc.stderr and "Traceback" not in proc.stderr
