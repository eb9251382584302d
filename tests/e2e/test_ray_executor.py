"""`harness run --executor ray`: the same leaderboard, records and MLflow runs as the local executor; a
worker killed mid-job is retried without changing a number; a missing extra is a clear error; no Ray
process outlives the command that started it.

Every run is a subprocess, as a user runs it (the CLI starts and stops its own local Ray instance). To keep
the module short on two cores, the suite (one job of each task) runs twice in all: locally, and on Ray
with one worker killed mid-job, so the Ray run must match the local one *despite* the retry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

SUITE = """\
name: raysuite
variant: tiny
device: cpu
batch_size: 32
entries:
  - task: fsc
    datasets: [mini_coop]
    protocol: {text_space: "clip:tiny", epochs: 10, train_batch_size: 32, lr: 1.0e-3}
    grid:
      head: [linear-probe, text-classifier]
      shots: [1]
      seed: [1]
  - task: sbir
    datasets: [mini_sbir]
    protocol: {text_space: "clip:tiny", epochs: 1}
    grid:
      seed: [1]
  - task: ovss
    datasets: [mini_ovss]
    protocol: {train_dataset: mini_ovss_train, text_space: "clip:tiny", templates: ["a photo of a {}."],
               crop_size: 64, train_scale: [1.0, 1.0], flip: false, iterations: 10, batch_size: 8, lr: 0.001,
               weight_decay: 0.0001, head_channels: 32, head_groups: 8, short_side: 64, max_long_side: 256}
    grid:
      seed: [1]
"""
N_JOBS = 4
# What a job computes; timings, memory, host and cache counters legitimately differ between processes.
COMPUTED = ("job_key", "suite", "backbone", "backbone_fingerprint", "weights_fingerprint", "task", "task_version",
            "dataset", "data_fingerprint", "protocol", "column", "metrics", "details")


@pytest.fixture(autouse=True)
def no_ray_left_in_this_process():
    """Whatever a test does, Ray is not left initialised in the pytest process for the tests after it."""
    yield
    if ray.is_initialized():
        ray.shutdown()


def harness_run(work: Path, data: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`harness run -b resnet --suite <SUITE> ARGS` in `work` (own home and cache; the shared data folder)."""
    suite = work.parent / "raysuite.yaml"
    suite.write_text(SUITE)
    work.mkdir(exist_ok=True)
    full_env = {**os.environ, "HARNESS_HOME": str(work / "home"), "HARNESS_CACHE": str(work / "cache"),
                "HARNESS_DATA": str(data), "HF_HUB_OFFLINE": "1", **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "-b", "resnet", "--suite", str(suite),
                           "--out-dir", str(work / "leaderboards"), *args],
                          cwd=work, env=full_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def records(work: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (work / "home" / "records").glob("*.json")}


def computed(record: dict) -> dict:
    """The fields a job computes, without the durations some tasks report among their details."""
    out = {k: record[k] for k in COMPUTED}
    out["details"] = {k: v for k, v in record["details"].items() if not k.endswith("_seconds")}
    return out


def mlflow_job_runs(work: Path) -> dict[str, list]:
    """FINISHED MLflow job runs by job key, each with the artifact files it holds."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'home' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("harness-raysuite")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`harness.kind` = 'job'")
    out: dict[str, list] = {}
    for run in runs:
        if run.info.status != "FINISHED":
            continue
        files = sorted(f.path for d in client.list_artifacts(run.info.run_id) for f in
                       ([d] if not d.is_dir else client.list_artifacts(run.info.run_id, d.path)))
        out.setdefault(run.data.tags["harness.job_key"], []).append(files)
    return out


def tagged_processes(tag: str) -> list[int]:
    """Live processes whose environment carries `tag` (a command's Ray processes inherit its environment)."""
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if tag.encode() in environ.read_bytes():
                pids.append(int(environ.parent.name))
        except OSError:
            continue
    return pids


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The suite run twice on one data folder: by the local executor, and by the Ray executor with the fault
    hook armed (the first job batch SIGKILLs its worker), tagging every process it starts."""
    root = tmp_path_factory.mktemp("ray")
    data, tag, marker = root / "data", uuid.uuid4().hex, root / "fault-injected"
    harness_run(root / "local", data)
    proc = harness_run(root / "ray", data, "--executor", "ray",
                       env={"HARNESS_RAY_FAULT_ONCE": str(marker), "HARNESS_TEST_TAG": tag})
    return SimpleNamespace(local=root / "local", ray=root / "ray", data=data, stderr=proc.stderr, tag=tag,
                           marker=marker)


def test_ray_executor_matches_local_executor(runs):
    pd.testing.assert_frame_equal(pd.read_csv(runs.ray / "leaderboards" / "raysuite.csv"),
                                  pd.read_csv(runs.local / "leaderboards" / "raysuite.csv"))
    mine, theirs = records(runs.ray), records(runs.local)
    assert set(mine) == set(theirs) and len(mine) == N_JOBS
    for key in theirs:  # bit-identical numbers, details (losses, chosen C, ...) included
        assert computed(mine[key]) == computed(theirs[key]), key
    job_files = mlflow_job_runs(runs.ray)
    assert set(job_files) == set(mine) and all(len(r) == 1 for r in job_files.values())  # one FINISHED run per key
    assert job_files == mlflow_job_runs(runs.local)  # the same artifacts: record, SBIR grid, OVSS table + overlay
    assert any(f.startswith("qualitative/") for (files,) in job_files.values() for f in files)


def test_worker_killed_mid_job_is_retried(runs):
    assert runs.marker.exists(), "the fault hook never fired: no worker was killed"
    assert f"{N_JOBS} job(s) ran, 0 skipped" in runs.stderr  # the killed job ran again; its result is above


def test_no_ray_process_outlives_the_command(runs):
    deadline = time.monotonic() + 15  # the local Ray instance the command started goes with it
    while tagged_processes(runs.tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert tagged_processes(runs.tag) == []


def test_missing_ray_is_a_clear_error_naming_the_extra(monkeypatch):
    from harness.errors import HarnessError
    from harness.run.factory import make_executor

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(HarnessError, match=r"optional extra 'ray'.*\[ray\]"):
        make_executor("ray")
    with pytest.raises(HarnessError, match="--executor ray"):
        make_executor("local", address="auto")
    assert type(make_executor("local")).__name__ == "LocalExecutor"  # the local path never needs Ray
