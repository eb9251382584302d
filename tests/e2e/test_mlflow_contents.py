"""What a user finds in the MLflow UI after one real `harness run` against `MLFLOW_TRACKING_URI=sqlite:///...`,
started from an unrelated working directory: the job's training curve by step, timings, memory and throughput
as metrics, a readable name and weights param, MLflow's git tag, artifacts beside the store (none in the working
directory), an experiment with a description, and a parent run holding the leaderboard files and a summary.

Expected values come from the run record on disk, the leaderboard files on disk, `git rev-parse HEAD` and
`harness.data.weights.resolve_weights` (the weights identity), never from the tracking code itself.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from e2e_helpers import fsc_entry, harness_env, run_harness, write_suite
from mlflow.tracking import MlflowClient

from harness.data.weights import resolve_weights

ROOT = Path(__file__).resolve().parents[2]


def head_commit() -> str | None:
    """The commit of the checkout the tests run from (None outside a git checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


@pytest.mark.slow
def test_one_run_fills_mlflow_with_what_a_user_wants_to_see(tmp_path):
    store = tmp_path / "store" / "mlflow.db"
    cwd, out = tmp_path / "cwd", tmp_path / "lb"
    cwd.mkdir()
    suite = write_suite(tmp_path / "mlc.yaml", "mlc", [fsc_entry([1], [1], heads=("text-classifier",), epochs=4)])
    uri = f"sqlite:///{store}"
    env = harness_env(home=tmp_path / "home", cache=tmp_path / "cache", uri=uri, data=tmp_path / "data")
    run_harness("run", "--backbone", "resnet", "--suite", str(suite), "--out-dir", str(out), env=env, cwd=cwd)
    [record] = [json.loads(p.read_text()) for p in (tmp_path / "home" / "records").glob("*.json")]

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("harness-mlc")
    assert exp.tags["harness.suite"] == "mlc" and "mlc" in exp.tags["mlflow.note.content"]
    runs = client.search_runs([exp.experiment_id])
    [job] = [r for r in runs if r.data.tags.get("harness.kind") == "job"]
    [parent] = [r for r in runs if r.data.tags.get("harness.kind") == "invocation"]

    # Artifacts beside the store, nothing in the working directory (MLflow's own default is ./mlruns).
    artifacts = (store.parent / "mlartifacts").as_uri() + "/"
    assert job.info.artifact_uri.startswith(artifacts) and parent.info.artifact_uri.startswith(artifacts)
    assert list(cwd.iterdir()) == []

    # The loss curve: one step per epoch, the record's values.
    history = sorted(client.get_metric_history(job.info.run_id, "train.loss"), key=lambda m: m.step)
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert [m.value for m in history] == pytest.approx(record["details"]["loss_per_epoch"])
    metrics = job.data.metrics
    assert metrics["time.total_s"] == pytest.approx(record["timings"]["total_s"])
    assert metrics["memory.peak_rss_mb"] == pytest.approx(record["memory"]["peak_rss_mb"])
    extracted = record["counters"]["images_extracted"]
    assert extracted > 0  # a fresh cache: every image went through the backbone
    assert metrics["throughput.images_per_s"] == pytest.approx(extracted / record["timings"]["total_s"])
    assert metrics["top1"] == pytest.approx(record["metrics"]["top1"])

    name = job.info.run_name
    assert name == f"resnet:tiny/fsc/mini_coop/{record['column']}/seed=1" and record["column"] and "//" not in name
    assert job.data.params["backbone.weights"] == resolve_weights("random", seed=0).fingerprint
    sha = job.data.tags["mlflow.source.git.commit"]
    assert re.fullmatch(r"[0-9a-f]{40}", sha)
    if head_commit() is not None:
        assert sha == head_commit() == parent.data.tags["mlflow.source.git.commit"]

    # The parent run: the leaderboard files as written, a summary, and only top1 in the leaderboard.
    listed = sorted(a.path for a in client.list_artifacts(parent.info.run_id, "leaderboard"))
    assert listed == ["leaderboard/mlc.csv", "leaderboard/mlc.html", "leaderboard/mlc.md"]
    down = Path(client.download_artifacts(parent.info.run_id, "leaderboard/mlc.csv", str(tmp_path / "down")))
    assert down.read_bytes() == (out / "mlc.csv").read_bytes()
    summary = client.get_run(parent.info.run_id).data.metrics
    assert summary["jobs.planned"] == summary["jobs.ran"] == summary["jobs.logged"] == 1.0
    assert summary["jobs.skipped"] == 0.0 and summary["suite.jobs_finished"] == 1.0
    assert summary["mean.fsc.top1/resnet.tiny"] == pytest.approx(record["metrics"]["top1"])
    board = pd.read_csv(out / "mlc.csv")
    assert list(board["metric"]) == ["top1"] and board["mean"].tolist() == pytest.approx([record["metrics"]["top1"]],
                                                                                      abs=1e-4)
