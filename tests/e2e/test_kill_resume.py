"""SIGKILL a run at several moments (start-up/extraction, right as a record lands), rerun to
completion, and get exactly the uninterrupted leaderboard with one FINISHED MLflow run per job key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

SUITE = """\
name: killme
variant: tiny
device: cpu
batch_size: 32
entries:
  - task: fsc
    datasets: [mini_coop]
    protocol: {epochs: 20, train_batch_size: 32, lr: 1.0e-3}
    grid:
      head: [linear-probe]
      shots: [1, 4]
      seed: [1, 2]
"""
N_JOBS = 4


def env_for(home: Path, cache: Path) -> dict[str, str]:
    env = {**os.environ, "HARNESS_HOME": str(home), "HARNESS_CACHE": str(cache)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def start(suite: Path, env: dict, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness", "run", "-b", "resnet", "--suite", str(suite)],
                            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def records(home: Path) -> list[Path]:
    return sorted((home / "records").glob("*.json"))


def wait_for(cond, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def finish(suite: Path, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "-b", "resnet", "--suite", str(suite)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_sigkill_at_several_moments_then_resume(tmp_path):
    suite = tmp_path / "killme.yaml"
    suite.write_text(SUITE)

    # The reference: one uninterrupted run in its own home and cache.
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    finish(suite, env_for(ref_dir / "home", ref_dir / "cache"), ref_dir)
    reference = pd.read_csv(ref_dir / "leaderboards" / "killme.csv")

    work = tmp_path / "work"
    work.mkdir()
    home, cache = work / "home", work / "cache"
    env = env_for(home, cache)
    kills = 0
    # 1. early: start-up, planning, feature extraction (no record yet)
    proc = start(suite, env, work)
    time.sleep(2.5)
    if proc.poll() is None:
        kills += 1
    kill(proc)
    # 2. the moment the next record lands (its MLflow run is being logged), twice
    for _ in range(2):
        have = len(records(home))
        if have >= N_JOBS:
            break
        proc = start(suite, env, work)
        landed = wait_for(lambda p=proc, n=have: len(records(home)) > n or p.poll() is not None)
        if landed and proc.poll() is None:
            kills += 1
        kill(proc)
    assert kills >= 2

    for path in records(home):  # atomic: every record that exists is whole
        json.loads(path.read_text())
    done = finish(suite, env, work)
    assert "job(s) ran" in done.stderr
    final = pd.read_csv(work / "leaderboards" / "killme.csv")
    pd.testing.assert_frame_equal(final, reference)
    assert len(records(home)) == N_JOBS

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["harness-killme"])
    jobs = runs[runs["tags.harness.kind"] == "job"]
    finished = jobs[jobs["status"] == "FINISHED"]
    assert finished["tags.harness.job_key"].is_unique and len(finished) == N_JOBS
    assert set(finished["tags.harness.job_key"]) == {p.stem for p in records(home)}
    # a run cut short stays RUNNING/FAILED and is not counted: never a second FINISHED run for a key
    assert set(jobs["status"]) <= {"FINISHED", "RUNNING", "FAILED"}
    # no half-written cache entry is left under a real name (temp files are dot-prefixed and never read)
    from safetensors import safe_open

    for entry in cache.rglob("*.safetensors"):
        with safe_open(str(entry), framework="pt") as fh:
            assert "sha256" in (fh.metadata() or {})
