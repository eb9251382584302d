"""A second run of the mini suite's fsc entry with other seeds reads every feature from the persistent cache.

The linear-probe head only: the text-classifier head trains a U-head for 20 epochs per job, work no
feature cache can save. Run 1 (`--seeds 1`) starts from an empty HARNESS_CACHE; run 2 (`--seeds 2,3`, same
cache, fresh records so every job runs) must extract no image (`images_extracted == 0` in every run
record's counters). Both runs are the CLI in a subprocess, as a user runs it. Ratios: end-to-end wall
clock (interpreter start-up, imports, model build and MLflow logging included), and the in-process job
time (sum of the records' `timings.total_s`: extraction + evaluation); run 2 has twice the jobs of run 1,
so both are also given per job.
Target: run 2 >= 5x faster than run 1 (per job, in-process: the part the cache can speed up).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _bench import report

BACKBONE = "vermouth"
SUITE = """\
name: mini_cache_bench
description: the mini suite's fsc entry on mini_coop (linear probe), for the feature-cache benchmark
variant: tiny
device: cpu
batch_size: 32
entries:
  - task: fsc
    datasets: [mini_coop]
    grid:
      head: [linear-probe]
      shots: [1, 4, 16]
      seed: [1, 2, 3]
"""


def _run(env: dict[str, str], cwd: Path, suite: Path, seeds: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--backbone", BACKBONE, "--suite", str(suite),
                           "--seeds", seeds, "--out-dir", str(cwd / "leaderboards")],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=900)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    return elapsed


def _records(home: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((home / "records").glob("*.json"))]


def test_second_run_reads_the_cache(benchmark, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    env = {**os.environ, "HARNESS_HOME": str(tmp_path / "home1"), "HARNESS_DATA": str(tmp_path / "data"),
           "HARNESS_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    first_wall = _run(env, tmp_path, suite, "1")
    first = _records(tmp_path / "home1")
    assert first and all(r["counters"].get("feature_cache_misses", 0) >= 0 for r in first)

    second_env = {**env, "HARNESS_HOME": str(tmp_path / "home2")}

    def second_run() -> float:
        shutil.rmtree(tmp_path / "home2", ignore_errors=True)  # records and MLflow afresh: every job runs
        return _run(second_env, tmp_path, suite, "2,3")

    benchmark.group = "feature-cache"
    second_wall = benchmark.pedantic(second_run, rounds=1, iterations=1)
    second = _records(tmp_path / "home2")
    assert len(second) == 2 * len(first)
    extracted = sum(r["counters"].get("images_extracted", 0) for r in second)
    assert extracted == 0, [r["counters"] for r in second]
    first_jobs_s = sum(r["timings"]["total_s"] for r in first)
    second_jobs_s = sum(r["timings"]["total_s"] for r in second)
    per_job_inproc = (first_jobs_s / len(first)) / (second_jobs_s / len(second))
    per_job_wall = (first_wall / len(first)) / (second_wall / len(second))
    report(benchmark, f"feature cache, {BACKBONE}:tiny fsc on mini_coop, seeds 1 then 2,3",
           first_jobs=len(first), second_jobs=len(second),
           first_images_extracted=sum(r["counters"].get("images_extracted", 0) for r in first),
           second_images_extracted=extracted,
           second_cache_hits=sum(r["counters"].get("feature_cache_hits", 0) for r in second),
           first_wall_s=first_wall, second_wall_s=second_wall, wall_ratio=first_wall / second_wall,
           wall_ratio_per_job=per_job_wall, first_jobs_s=first_jobs_s, second_jobs_s=second_jobs_s,
           jobs_ratio=first_jobs_s / second_jobs_s, jobs_ratio_per_job=per_job_inproc)
    assert per_job_inproc >= 5.0, f"second run only {per_job_inproc:.2f}x faster per job (in-process)"
